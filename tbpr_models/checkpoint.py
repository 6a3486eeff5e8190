"""Checkpoints as a folder: `model.safetensors` (tensors only, never pickle) + `config.json`.

`config.json` holds `ModelConfig.to_dict()` and, under the key `extra`, whatever the caller adds
(epoch, metrics, ...). Both files are written to temporary names and renamed, so an interrupted save
never leaves a half-written checkpoint file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from tbpr_models.config import ModelConfig
from tbpr_models.model import RetrievalModel
from tbpr_models.registry import build_model

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
    with _atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp))
    with _atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return directory


def read_checkpoint_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, extra) from a checkpoint folder's config.json."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path}; pass a folder written by save_checkpoint")
    payload = json.loads(path.read_text())
    extra = payload.pop(EXTRA_KEY, {})
    return ModelConfig.from_dict(payload), extra


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


class _atomic_path:
    """Context manager: yields a temporary path beside `target`, renamed onto it on success."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)
