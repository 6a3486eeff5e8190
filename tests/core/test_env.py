"""What TBPR_HOME holds on disk, part by part, against `du` itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tasks.core.env import Home


def test_disk_counts_what_du_counts_a_hard_link_once(tmp_path: Path) -> None:
    root = tmp_path / "home"
    (root / "mlartifacts" / "a").mkdir(parents=True)
    (root / "runs" / "r1" / "train").mkdir(parents=True)
    (root / "cache").mkdir()
    weights = root / "mlartifacts" / "a" / "model.safetensors"
    weights.write_bytes(os.urandom(300_000))
    os.link(weights, root / "runs" / "r1" / "train" / "model.safetensors")  # MLflow's copy, hard-linked
    (root / "runs" / "r1" / "log.txt").write_text("x" * 5000)
    (root / "cache" / "big.npy").write_bytes(os.urandom(1_000_000))
    (root / "warehouse.duckdb").write_bytes(b"y" * 70_000)
    parts = Home(root).disk()
    assert set(parts) == {"cache", "mlartifacts", "runs", "warehouse.duckdb"}
    du = int(
        subprocess.run(
            ["du", "-s", "-B1", str(root)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    assert sum(parts.values()) + root.stat().st_blocks * 512 == du
    assert (
        parts["mlartifacts"] >= 300_000 > parts["runs"] >= 5000
    )  # the linked file counted once, first by name
    assert Home(tmp_path / "missing").disk() == {}
