"""Model references -> checkpoint folders, the one resolver: a checkpoint folder as is, else a
training run id or a registry URI (`models:/tbpr-<variant>@champion`, `models:/name/3`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from tasks.core.errors import TbprError
from tasks.tracking.config import TrackingConfig
from tasks.tracking.names import CHAMPION
from tasks.tracking.selection import default_champion
from tasks.tracking.store import Tracker
from tbpr_models.checkpoint import BaseMismatchError, is_checkpoint, load_checkpoint
from tbpr_models.model import RetrievalModel


def resolve_checkpoint(
    ref: str | Path, tracking: TrackingConfig | None = None
) -> tuple[Path, dict[str, Any]]:
    """(checkpoint folder, run info) of `ref`; run info is empty for a folder given directly.

    A folder is a checkpoint when it holds what only `save_checkpoint` writes (README, "Layout");
    an existing folder that is not one is a TbprError rather than a lookup in the tracking store.
    """
    folder = Path(ref)
    if is_checkpoint(folder):
        return folder, {}
    if "/" in str(ref) and not str(ref).startswith("models:/") and not folder.exists():
        raise TbprError(
            f"no checkpoint folder at {folder}; pass a folder written by `tbpr train` (epoch_NNN/), a train "
            "run id or models:/tbpr-<variant>@champion"
        )
    if folder.is_dir():
        raise TbprError(
            f"{folder} is a folder but not a checkpoint (no model weights and config); pass a folder "
            "written by `tbpr train` (epoch_NNN/), a train run id or models:/tbpr-<variant>@champion"
        )
    return Tracker(tracking).resolve_model(str(ref))


def best_champion(tracking: TrackingConfig | None = None) -> tuple[str, str]:
    """(`models:/tbpr-<variant>@champion`, a line saying why it was chosen): the best val R1 among the
    registered champions validated on the same data, of the data with the largest val split (val R1 of
    other data does not compare: a quick-profile model's tiny val split never outranks the main job's);
    the first name on ties. Controls are never champions. TbprError when there is none (a SQLite store
    that does not exist is not created to find out)."""
    config = tracking or TrackingConfig()
    database = config.sqlite_file()
    champions = [] if database is not None and not database.is_file() else Tracker(config).champions()
    if not champions:
        raise TbprError(
            f"no champion model is registered in {config.resolved_tracking_uri()}; train one (`tbpr train`, "
            "`tbpr run`) or pass --run RUN_ID|models:/tbpr-<variant>@champion|CHECKPOINT_FOLDER"
        )
    best, compared, elsewhere = default_champion(champions)
    others = ", ".join(f"{c.name} v{c.version} {c.val_r1:.2f}" for c in compared)
    reason = f"{best.describe()}: the best of {len(compared) + 1} champion(s) validated on that data" + (
        f" (others: {others})" if others else ""
    )
    if elsewhere:
        reason += "; not compared, validated on other data with a smaller val split: " + ", ".join(
            c.describe() for c in elsewhere
        )
    return f"models:/{best.name}@{CHAMPION}", reason


def open_checkpoint(folder: Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """The model saved in `folder`; TbprError when it is missing, damaged (truncated weights, a config
    that is not JSON, a pickle posing as safetensors: never unpickled) or for other model settings."""
    if not is_checkpoint(folder):
        raise TbprError(
            f"no checkpoint at {folder} (model.safetensors and config.json); it was moved or deleted, or "
            "pass a folder written by `tbpr train`, a train run id or models:/tbpr-<variant>@champion"
        )
    try:
        return load_checkpoint(folder, device=device)
    except BaseMismatchError as exc:
        raise TbprError(str(exc)) from exc
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TbprError(
            f"the checkpoint at {folder} cannot be loaded ({first}); it is damaged or was written for other "
            "model settings: re-run `tbpr train`, or pass another checkpoint"
        ) from exc
