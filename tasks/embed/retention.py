"""Which of a pipeline run's EMB folders stay on disk once everything that reads them has run.

A pipeline run embeds the test split once per trained model (variant x seed), because every seed is
scored for the leaderboard's intervals. Once scored, a seed's EMB is derived data: its checkpoint is
in MLflow and `tbpr embed DATA --run RUN_ID --out EMB` rebuilds it exactly. Kept is the model a user
searches with: per variant, the seed of the best val R1 (selected on val, never on test; the first
seed on ties).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import TbprError
from tasks.embed.layout import EMBED_JSON


@dataclass(frozen=True)
class Removed:
    """The EMB folders a retention pass deleted, and the bytes they held."""

    folders: tuple[Path, ...] = ()
    bytes: int = 0


def best_val_models(models: Mapping[str, tuple[str, float]]) -> set[str]:
    """Per variant, the model of the highest val R1 (the earliest in `models`' order on ties).

    `models`: model name (e.g. `spatial-seed1`) -> (variant, val R1), in training order."""
    best: dict[str, tuple[str, float]] = {}
    for name, (variant, r1) in models.items():
        if variant not in best or r1 > best[variant][1]:
            best[variant] = (name, r1)
    return {name for name, _ in best.values()}


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links not followed)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def remove_embs(embs: Mapping[str, Path], keep: Collection[str]) -> Removed:
    """Delete the EMB folders of the models not in `keep`. Each must be an EMB (its `embed.json`
    present): anything else is a TbprError before a single folder is removed."""
    drop = {name: folder for name, folder in embs.items() if name not in keep and folder.exists()}
    strangers = [str(folder) for folder in drop.values() if not (folder / EMBED_JSON).is_file()]
    if strangers:
        raise TbprError(f"not an EMB folder (no {EMBED_JSON}), left in place: {', '.join(strangers)}")
    size = sum(folder_bytes(folder) for folder in drop.values())
    for folder in drop.values():
        shutil.rmtree(folder)
    return Removed(tuple(drop.values()), size)
