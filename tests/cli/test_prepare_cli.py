"""`tbpr prepare` on the command line: unusable sources exit 2 with a message and write nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.core.env import OFFLINE_DEFAULTS
from tbpr.cli import main


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run `tbpr.cli.main` in-process; its exit status."""
    for key, value in OFFLINE_DEFAULTS.items():
        monkeypatch.setenv(key, value)  # so configure_offline's edits are undone after the test
    monkeypatch.setattr(sys, "argv", ["tbpr", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    return code if isinstance(code, int) else 1


def _no_folder(root: Path) -> None:
    pass


def _no_annotation(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)


def _invalid_json(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    (root / "reid_raw.json").write_text('[{"id": 1, "file_path": "a.png",')


def _not_a_list(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    (root / "reid_raw.json").write_text('{"id": 1}')


def _wrong_format(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    (root / "data_captions.json").write_text("[]")


def _no_imgs(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "reid_raw.json").write_text("[]")


UNUSABLE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing folder": (_no_folder, "cuhk-pedes", "does not exist"),
    "no annotation file": (_no_annotation, "cuhk-pedes", "no cuhk-pedes annotation file"),
    "invalid json": (_invalid_json, "cuhk-pedes", "not valid UTF-8 JSON"),
    "top level not a list": (_not_a_list, "cuhk-pedes", "JSON list"),
    "annotation of another format": (_wrong_format, "cuhk-pedes", "check --format"),
    "no imgs folder": (_no_imgs, "cuhk-pedes", "imgs"),
    "unknown format": (_no_annotation, "market-1501", "market-1501"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_unusable_source_exits_2_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build, fmt, message = UNUSABLE[case]
    source, out = tmp_path / "src", tmp_path / "data"
    build(source)
    assert run_cli(["prepare", str(source), "--format", fmt, "--out", str(out)], monkeypatch) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_prepare_prints_the_split_table(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    write_source: Any,
    make_png: Any,
) -> None:
    records = [
        {"id": 4, "file_path": "a.png", "captions": ["one", "two"], "split": "test"},
        {"id": 5, "file_path": "b.png", "captions": ["x"], "split": "test"},
    ]
    source = write_source(tmp_path / "src", records, {"a.png": make_png(1)})
    args = ["prepare", str(source), "--format", "cuhk-pedes", "--out", str(tmp_path / "data")]
    monkeypatch.setenv("COLUMNS", "200")
    assert run_cli(args, monkeypatch) == 0
    first = capsys.readouterr().out
    assert "prepared" in first and "missing image file" in first
    test_row = next(line for line in first.splitlines() if line.strip("│ ").startswith("test"))
    assert test_row.replace("│", " ").split() == ["test", "1", "1", "2"]
    assert run_cli(args, monkeypatch) == 0
    assert "up to date" in capsys.readouterr().out


def test_console_script_exit_status(tmp_path: Path) -> None:
    """The installed entry point: exit 2, the message, no traceback (one subprocess, ~1 s)."""
    command = [sys.executable, "-c", "from tbpr.cli import main; main()", "prepare", str(tmp_path / "nope")]
    result = subprocess.run(
        [*command, "--format", "rstpreid", "--out", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    err = " ".join(result.stderr.split())  # rich wraps long lines
    assert "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()
