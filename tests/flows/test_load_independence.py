"""A result must not depend on how busy the machine was: `tbpr run --profile quick` run twice, the
second time with every core kept busy by competing processes, prints the same leaderboard (every
column but the scoring seconds, which measure the machine). No shipped profile has a wall-clock
budget, so the CPU's speed can change when a run ends, never what it computes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.config import PROFILES, PipelineConfig, load_config, profile_path
from tasks.report.queries import leaderboard

TBPR = Path(sys.executable).with_name("tbpr")


def test_no_shipped_profile_has_a_time_budget() -> None:
    for profile in PROFILES:
        config = load_config(PipelineConfig, profile_path(profile))
        trained = [config.train.config, config.train.backbone]
        trained += [config.train.for_variant(v) for v in config.train.variants]
        budgets = {t.time_budget_minutes for t in trained if t is not None}
        assert budgets == {None}, profile


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
    boards, outputs = [], []
    for busy in (False, True):
        with busy_cpu() if busy else idle():
            done = subprocess.run(
                [str(TBPR), "run", "--profile", "quick"], env=env, capture_output=True, text=True, timeout=900
            )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
        boards.append(board_without_seconds(tmp_path / "home" / "warehouse.duckdb"))
    assert boards[0] == boards[1]
    assert len(boards[0]) == 8 and all(row[0] for row in boards[0])
    assert "budget" not in outputs[1]
