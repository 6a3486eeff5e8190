"""Tokenizers, loaded offline: MiniLM's WordPiece (the `minilm` and `small` text encoders share it) or
the BPE tokenizer of a local CLIP folder (the `clip` text encoder).

CLIP's tokenizer has no mask token; like IRRA, tbpr gives the masked-word objective the id just below
`<|startoftext|>` (the last BPE merge of the original vocabulary, which IRRA gives up for `<|mask|>`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tbpr_models.config import TextEncoderConfig
from tbpr_models.encoders.hf import clip_folder
from tbpr_models.encoders.text import minilm_path


@dataclass(frozen=True)
class Tokenizer:
    """`tokenizer(texts) -> (input_ids (B, L) long, attention_mask (B, L) long)`, L = max_length."""

    backend: Any  # a transformers tokenizer
    max_length: int
    mask_id: int | None = None  # overrides the backend's mask token (CLIP has none)

    def __call__(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        encoded = self.backend(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return encoded["input_ids"].to(torch.long), encoded["attention_mask"].to(torch.long)

    @property
    def vocab_size(self) -> int:
        return len(self.backend)  # with added special tokens (CLIP's start/end of text)

    @property
    def pad_token_id(self) -> int:
        return int(self.backend.pad_token_id)

    @property
    def mask_token_id(self) -> int:
        return int(self.backend.mask_token_id if self.mask_id is None else self.mask_id)

    def decode(self, input_ids: Tensor) -> list[str]:
        """Texts back from ids (B, L), special tokens dropped."""
        return [str(s) for s in self.backend.batch_decode(input_ids.tolist(), skip_special_tokens=True)]


def _load(text_config: TextEncoderConfig) -> Tokenizer:
    from transformers import AutoTokenizer

    if text_config.kind != "clip":
        backend = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        return Tokenizer(backend=backend, max_length=text_config.max_length)
    folder = clip_folder(text_config.path, weights=False, tokenizer=True)
    try:
        backend = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"the tokenizer in CLIP folder {folder} could not be loaded: {exc}") from None
    if backend.mask_token_id is not None:
        return Tokenizer(backend=backend, max_length=text_config.max_length)
    if backend.bos_token_id is None or backend.pad_token_id is None:
        raise FileNotFoundError(f"the tokenizer in {folder} has no start-of-text or pad token; is it CLIP's?")
    return Tokenizer(
        backend=backend, max_length=text_config.max_length, mask_id=int(backend.bos_token_id) - 1
    )


def with_vocabulary(text_config: TextEncoderConfig) -> TextEncoderConfig:
    """`text_config` with the vocabulary fields of its tokenizer: read from the folder for `clip`
    (a missing folder or tokenizer is a FileNotFoundError), unchanged for the MiniLM vocabulary."""
    if text_config.kind != "clip":
        return text_config
    tokenizer = _load(text_config)
    return dataclasses.replace(
        text_config,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
    )


def build_tokenizer(text_config: TextEncoderConfig) -> Tokenizer:
    """The tokenizer of `text_config`'s encoder, padding/truncating to max_length; its vocabulary must
    match the config's (a checkpoint trained with another tokenizer is refused)."""
    tokenizer = _load(text_config)
    if (tokenizer.vocab_size, tokenizer.pad_token_id, tokenizer.mask_token_id) != (
        text_config.vocab_size,
        text_config.pad_token_id,
        text_config.mask_token_id,
    ):
        raise ValueError(
            "the text config's vocab_size/pad_token_id/mask_token_id "
            f"({text_config.vocab_size}, {text_config.pad_token_id}, {text_config.mask_token_id}) do not match "
            f"the {text_config.kind} tokenizer ({tokenizer.vocab_size}, {tokenizer.pad_token_id}, "
            f"{tokenizer.mask_token_id}); keep the defaults"
        )
    return tokenizer


def ordinary_tokens(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, L) bool: the real tokens but the first ([CLS]) and the last real one ([SEP]) of each caption."""
    real = attention_mask.bool()
    last = real.sum(dim=1, keepdim=True) - 1  # (B, 1) position of [SEP]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, L)
    return real & (positions > 0) & (positions != last)


def label_vocabulary(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(V',) int64: the sorted word pieces that occur as ordinary tokens in captions (B, L): what
    `tbpr_models.variants.cross_fusion.mask_tokens` can ever choose as a label."""
    return torch.unique(input_ids[ordinary_tokens(input_ids, attention_mask)]).to(torch.long)
