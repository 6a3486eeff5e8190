"""Checkpoints as a folder: `model.safetensors` (tensors only, never pickle) + `config.json`.

`config.json` holds `ModelConfig.to_dict()` and, under the key `extra`, whatever the caller adds
(epoch, metrics, ...). A folder is a checkpoint when it holds both (`is_checkpoint`): the weights
file is what only a checkpoint has. For an atomic save, save into a staging folder and rename it, as
the trainer does with its epoch folders (`tasks.train.state`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from tbpr_models.config import ModelConfig
from tbpr_models.model import RetrievalModel, build_model
from tbpr_models.registry import model_config_from_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXTRA_KEY = "extra"


def save_checkpoint(
    model: RetrievalModel, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write the model's weights and config into `directory` (created if needed); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {**model.config.to_dict(), EXTRA_KEY: dict(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
    save_model(model, str(directory / WEIGHTS_FILE))
    shutil.copymode(directory / CONFIG_FILE, directory / WEIGHTS_FILE)  # the umask's mode, not 0600
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    """True when `directory` holds a checkpoint's weights and config (what `save_checkpoint` writes)."""
    directory = Path(directory)
    return (directory / WEIGHTS_FILE).is_file() and (directory / CONFIG_FILE).is_file()


def read_checkpoint_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, extra) from a checkpoint folder's config.json."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path}; pass a folder written by save_checkpoint")
    payload = json.loads(path.read_text())
    extra = payload.pop(EXTRA_KEY, {})
    return model_config_from_dict(payload), extra


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """The model saved in `directory`, on `device`, in eval mode (pretrained weights are not re-read)."""
    config, _ = read_checkpoint_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"no checkpoint weights at {weights}; pass a folder written by save_checkpoint"
        )
    model = build_model(config, load_pretrained=False)
    load_model(model, str(weights), strict=True, device=str(device))
    return model.to(device).eval()
