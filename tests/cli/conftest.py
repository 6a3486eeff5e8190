"""`tbpr(args) -> (exit status, stderr)` and `tbpr_io(args) -> (exit status, stdout, stderr)`: the CLI
run in process through `tbpr.cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tbpr.cli import main

Tbpr = Callable[[list[str]], tuple[int, str]]
TbprIO = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def tbpr_io(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> TbprIO:
    def run(args: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["tbpr", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        code = stop.value.code
        captured = capsys.readouterr()
        return (code if isinstance(code, int) else 1), captured.out, captured.err

    return run


@pytest.fixture
def tbpr(tbpr_io: TbprIO) -> Tbpr:
    def run(args: list[str]) -> tuple[int, str]:
        code, _, err = tbpr_io(args)
        return code, err

    return run
