"""A result must not depend on how busy the machine was: `tbpr run --profile quick` run twice, the
second time with every core kept busy by competing processes, prints the same leaderboard (every
column but the scoring seconds, which measure the machine). No shipped profile has a wall-clock
budget, so the CPU's speed can change when a run ends, never what it computes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.config import PROFILES, PipelineConfig, profile_path
from tasks.report.queries import leaderboard
from tasks.train.config import registered_variants

TBPR = Path(sys.executable).with_name("tbpr")


def _keys(table: object) -> set[str]:
    if isinstance(table, dict):
        return set(table) | {k for value in table.values() for k in _keys(value)}
    if isinstance(table, list):
        return {k for value in table for k in _keys(value)}
    return set()


def test_no_shipped_profile_has_a_time_budget() -> None:
    for profile in PROFILES:
        assert "time_budget_minutes" not in _keys(tomllib.loads(profile_path(profile).read_text())), profile
    train = PipelineConfig().train  # the embedded default
    assert train.config.time_budget_minutes is None and train.backbone is None


@contextmanager
def busy_cpu() -> Iterator[None]:
    """One spinning process per core (plus one) for the duration."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) + 1)
    ]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def board_without_seconds(warehouse: Path) -> list[tuple[object, ...]]:
    result = leaderboard(warehouse)
    keep = [i for i, column in enumerate(result.columns) if column != "seconds"]
    assert len(keep) == len(result.columns) - 1
    return [tuple(row[i] for i in keep) for row in result.rows]


@contextmanager
def idle() -> Iterator[None]:
    yield


def test_quick_profile_gives_the_same_leaderboard_on_a_busy_machine(tmp_path: Path) -> None:
    env = {**os.environ, "TBPR_HOME": str(tmp_path / "home"), "COLUMNS": "160"}
    env.pop("PREFECT_API_URL", None)
    boards: list[list[tuple[object, ...]]] = []
    for busy in (False, True):
        with busy_cpu() if busy else idle():
            done = subprocess.run(
                [str(TBPR), "run", "--profile", "quick"], env=env, capture_output=True, text=True, timeout=900
            )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        boards.append(board_without_seconds(tmp_path / "home" / "warehouse.duckdb"))
    assert boards[0] == boards[1]
    columns = [c for c in leaderboard(tmp_path / "home" / "warehouse.duckdb").columns if c != "seconds"]
    rows = [dict(zip(columns, row, strict=True)) for row in boards[1]]
    assert len(rows) == len(registered_variants()) and {(r["epochs"], r["stop"]) for r in rows} == {
        ("2", "epochs")
    }
