"""Checkpoints as a folder: `model.safetensors` (tensors only, never pickle) + `config.json`.

`config.json` holds `ModelConfig.to_dict()` and, under the key `extra`, whatever the caller adds
(epoch, metrics, ...). A folder is a checkpoint when it holds both (`is_checkpoint`): the weights
file is what only a checkpoint has. An encoder loaded from a local folder (`clip`, `hf_vision`) gets
that folder's architecture and tokenizer files (never its weights: they are in model.safetensors)
copied to `encoders/<image|text>/`, and its `path` in config.json points there (relative to the
checkpoint), so a checkpoint works where the original folder is not (an MLflow artifact, another machine). For an atomic save, save into a staging folder and rename it, as
the trainer does with its epoch folders (`tasks.train.state`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from tbpr_models.config import FOLDER_KINDS, ModelConfig
from tbpr_models.encoders.hf import WEIGHT_FILES
from tbpr_models.model import RetrievalModel, build_model
from tbpr_models.registry import model_config_from_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXTRA_KEY = "extra"
ENCODERS_DIR = "encoders"  # copies of the folders of folder-loaded encoders, without their weights


def save_checkpoint(
    model: RetrievalModel, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write the model's weights and config into `directory` (created if needed); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {**model.config.to_dict(), EXTRA_KEY: dict(extra or {})}
    for tower in ("image", "text"):
        settings = payload[tower]
        if settings["kind"] in FOLDER_KINDS and settings.get("path"):
            settings["path"] = _copy_encoder_folder(Path(settings["path"]), directory, tower)
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
    save_model(model, str(directory / WEIGHTS_FILE))
    shutil.copymode(directory / CONFIG_FILE, directory / WEIGHTS_FILE)  # the umask's mode, not 0600
    return directory


def _copy_encoder_folder(source: Path, directory: Path, tower: str) -> str:
    """Copy `source`'s files but its weights into `directory/encoders/<tower>`; the relative path."""
    relative = f"{ENCODERS_DIR}/{tower}"
    if not source.is_absolute() and (directory / source).is_dir():
        source = directory / source  # re-saving a model loaded from a checkpoint
    target = directory / relative
    if source.resolve() == target.resolve():
        return relative
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and file.name not in WEIGHT_FILES and not file.name.endswith(".safetensors"):
            shutil.copy2(file, target / file.name)
    return relative


def is_checkpoint(directory: str | Path) -> bool:
    """True when `directory` holds a checkpoint's weights and config (what `save_checkpoint` writes)."""
    directory = Path(directory)
    return (directory / WEIGHTS_FILE).is_file() and (directory / CONFIG_FILE).is_file()


def weights_digest(directory: str | Path) -> str:
    """`sha256:<hex>` of a checkpoint's weights and config files: what an embedding records of the
    model that made it, so a reader can tell the checkpoint was retrained since."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(name.encode() + b"\0")
        with open(Path(directory) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_checkpoint_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, extra) from a checkpoint folder's config.json."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path}; pass a folder written by save_checkpoint")
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or not isinstance(payload.get(EXTRA_KEY, {}), dict):
        raise ValueError(f"{path} is not a checkpoint config (a JSON object with an `{EXTRA_KEY}` object)")
    extra = payload.pop(EXTRA_KEY, {})
    for tower in ("image", "text"):
        settings = payload.get(tower, {})
        if not isinstance(settings, dict):
            raise ValueError(f"{path}: {tower} must be a table of settings, got {settings!r}")
        folder = settings.get("path")
        if settings.get("kind") in FOLDER_KINDS and folder and not Path(folder).is_absolute():
            settings["path"] = str(Path(directory).resolve() / folder)  # the checkpoint's own copy
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
