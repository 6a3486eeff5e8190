"""`tbpr(args) -> (exit status, stderr)`: the CLI run in process through `tbpr.cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tbpr.cli import main

Tbpr = Callable[[list[str]], tuple[int, str]]


@pytest.fixture
def tbpr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Tbpr:
    def run(args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["tbpr", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        code = stop.value.code
        return (code if isinstance(code, int) else 1), capsys.readouterr().err

    return run
