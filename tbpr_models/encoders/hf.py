"""Shared by the encoders: loading a local CLIP folder, and activation checkpointing of one stage.

Nothing is downloaded: a folder that is missing, not a CLIP model, or without its weights (when they
are wanted) is a `FileNotFoundError` naming what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.checkpoint import checkpoint

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def clip_folder(path: str | None, *, weights: bool, tokenizer: bool = False) -> Path:
    """`path` checked to be a local CLIP folder (`CLIPModel.save_pretrained`), with its weights and
    tokenizer files when asked; a clear FileNotFoundError otherwise."""
    hint = "pass the folder written by CLIPModel.save_pretrained (with its tokenizer), e.g. a local copy of openai/clip-vit-base-patch16"
    folder = Path(path or "")
    if not path or not folder.is_dir():
        raise FileNotFoundError(f"CLIP folder {path!r} does not exist; {hint}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"CLIP folder {folder} has no config.json; {hint}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise FileNotFoundError(f"CLIP folder {folder}: config.json is not readable JSON ({exc})") from None
    if model_type != "clip":
        raise FileNotFoundError(
            f"{folder} holds a {model_type!r} model, not a CLIP model (config.json model_type 'clip'); {hint}"
        )
    if weights and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"CLIP folder {folder} has no weights (one of {', '.join(WEIGHT_FILES)}); {hint}"
        )
    if tokenizer and not any(all((folder / name).is_file() for name in group) for group in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"CLIP folder {folder} has no tokenizer (tokenizer.json, or vocab.json and merges.txt); {hint}"
        )
    return folder


def load_clip(path: str | None, load_pretrained: bool) -> Any:
    """The transformers `CLIPModel` in folder `path`: its weights, or random ones of its architecture
    (`load_pretrained=False`, when a checkpoint will overwrite them)."""
    from transformers import CLIPConfig, CLIPModel

    folder = clip_folder(path, weights=load_pretrained)
    try:
        if load_pretrained:
            return CLIPModel.from_pretrained(folder, local_files_only=True)
        return CLIPModel(CLIPConfig.from_pretrained(folder, local_files_only=True))
    except (OSError, ValueError, RuntimeError) as exc:
        raise FileNotFoundError(f"CLIP folder {folder} could not be loaded: {exc}") from None


def run_checkpointed(enabled: bool, function: Callable[..., Tensor], *args: Any) -> Tensor:
    """`function(*args)`, its activations recomputed in backward instead of stored when `enabled`
    (activation checkpointing: less memory, ~1/3 more compute)."""
    if enabled:
        return checkpoint(function, *args, use_reentrant=False)  # type: ignore[no-any-return]
    return function(*args)
