"""Pair re-rankers from a local Hugging Face folder: cross-encoders that score (caption, image) pairs.

A re-ranker is chosen by the `model_type` of the folder's `config.json` from `RERANKERS` (a registry,
as the variants are); it is loaded with `local_files_only`, so nothing is ever downloaded. BLIP's
image-text matching head (`BlipForImageTextRetrieval`, e.g. Salesforce/blip-itm-base-coco saved with
`save_pretrained`) is the one registered: each image's vision tokens are computed once per call, then
the text encoder cross-attends to them for every pair, and the score is the ITM head's match logit
minus its no-match logit (the log-odds of "this image matches", monotone in its probability).
Dimension letters: T texts, I images, P pairs, L words, N image tokens, D dim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor


class PairReranker(Protocol):
    """What a re-rank stage needs: a score per (text, image) pair, higher is a better match."""

    kind: str

    def score_pairs(self, texts: Sequence[str], images: Sequence[Image.Image], pairs: Tensor) -> Tensor:
        """(P,) float32 scores of `pairs` (P, 2): rows of `texts` and of `images`."""
        ...


class BlipItm:
    """BLIP's image-text matching head on a local folder (model + `BlipProcessor`)."""

    kind = "blip"

    def __init__(self, folder: Path, device: torch.device, batch: int = 64) -> None:
        from transformers import AutoProcessor, BlipForImageTextRetrieval

        model = BlipForImageTextRetrieval.from_pretrained(folder, local_files_only=True)
        self.model: Any = model.eval()
        self.model.to(device)
        self.processor: Any = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.device, self.batch = device, batch

    @torch.inference_mode()
    def score_pairs(self, texts: Sequence[str], images: Sequence[Image.Image], pairs: Tensor) -> Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        vision = self.model.vision_model(pixel_values=pixels).last_hidden_state  # (I, N, D)
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)  # (T, L)
        scores = []
        for start in range(0, len(pairs), self.batch):
            text_rows, image_rows = pairs[start : start + self.batch].to(self.device).unbind(1)  # (p,), (p,)
            image_embeds = vision[image_rows]  # (p, N, D)
            hidden = self.model.text_encoder(
                input_ids=ids[text_rows],
                attention_mask=mask[text_rows],
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=torch.ones(
                    image_embeds.shape[:-1], dtype=torch.long, device=self.device
                ),
            ).last_hidden_state  # (p, L, D)
            logits = self.model.itm_head(hidden[:, 0, :])  # (p, 2): no match, match
            scores.append((logits[:, 1] - logits[:, 0]).float().cpu())
        return torch.cat(scores) if scores else torch.empty(0)


# config.json `model_type` -> the re-ranker that loads such a folder
RERANKERS: dict[str, Callable[[Path, torch.device], PairReranker]] = {"blip": BlipItm}


def load_reranker(folder: Path, device: torch.device) -> PairReranker:
    """The registered re-ranker of `folder`'s `config.json` model_type; ValueError when the folder has
    none, it is not a JSON object, or its model type is not registered."""
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{folder} has no config.json (a Hugging Face `save_pretrained` folder)")
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config} is not valid JSON ({exc})") from exc
    if not isinstance(settings, dict):
        raise ValueError(f"{config} holds a JSON {type(settings).__name__}, not an object with a model_type")
    model_type = settings.get("model_type")
    if not isinstance(model_type, str) or model_type not in RERANKERS:
        raise ValueError(
            f"{config} names model_type {model_type!r}; re-rankers known: {', '.join(sorted(RERANKERS))}"
        )
    return RERANKERS[model_type](folder, device)


def save_random_blip(
    folder: Path, *, width: int = 32, layers: int = 2, image_size: int = 32, seed: int = 0
) -> Path:
    """Write a BLIP ITM folder with random weights (initializer range 0.5, so pairs score apart), a
    WordPiece tokenizer of a small vocabulary and a `BlipProcessor`, as `save_pretrained` writes a real
    one: for tests and dry runs; it downloads nothing."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipProcessor
    from transformers.models.blip.image_processing_blip import BlipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = [
        "a",
        "an",
        "the",
        "man",
        "woman",
        "person",
        "in",
        "with",
        "and",
        "of",
        "red",
        "blue",
        "black",
        "white",
        "green",
        "jacket",
        "shirt",
        "bag",
    ]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(special + letters + words)) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"), model_max_length=64)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    tower: dict[str, Any] = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
    }
    tower |= {"num_attention_heads": 2, "initializer_range": 0.5}
    config = BlipConfig(
        text_config={
            **tower,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "encoder_hidden_size": width,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": 8},
        projection_dim=16,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
