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


BPE_MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("r", "e"), ("i", "n</w>"), ("o", "n</w>"))


def save_random_clip(
    folder: Path,
    *,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    vision_width: int | None = None,
    patch_size: int = 8,
    image_size: int = 32,
    projection_dim: int = 16,
    context: int = 32,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a CLIP folder with random weights and a byte-level BPE tokenizer (the 256 byte symbols with
    and without the end-of-word mark, a few merges, filler tokens up to `vocab_size`, then the start and
    end of text, as in CLIP's vocabulary), the way `CLIPModel.save_pretrained` writes a real one.

    For tests, benchmarks at real sizes (ViT-B/16: width 512, vision_width 768, layers 12, heads 8,
    patch 16, image 224, projection 512, context 77, vocab 49408) and dry runs before the weights are
    at hand; it downloads nothing."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in BPE_MERGES)]
    if vocab_size is not None:
        vocab += [f"<|filler{i}|>" for i in range(vocab_size - 2 - len(vocab))]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(BPE_MERGES))  # type: ignore[arg-type]
    tower = {"intermediate_size": 4 * width, "num_hidden_layers": layers, "num_attention_heads": heads}
    vision = vision_width or width
    config = CLIPConfig(
        text_config={
            **tower,
            "hidden_size": width,
            "vocab_size": len(vocab),
            "max_position_embeddings": context,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            **tower,
            "hidden_size": vision,
            "intermediate_size": 4 * vision,
            "num_attention_heads": max(heads, vision // 64),
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
