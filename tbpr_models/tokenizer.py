"""The MiniLM WordPiece tokenizer (both text encoder kinds share its vocabulary), loaded offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tbpr_models.config import TextEncoderConfig
from tbpr_models.encoders.text import minilm_path


@dataclass(frozen=True)
class Tokenizer:
    """`tokenizer(texts) -> (input_ids (B, L) long, attention_mask (B, L) long)`, L = max_length."""

    backend: Any  # a transformers PreTrainedTokenizerFast
    max_length: int

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
        return int(self.backend.vocab_size)

    @property
    def pad_token_id(self) -> int:
        return int(self.backend.pad_token_id)

    @property
    def mask_token_id(self) -> int:
        return int(self.backend.mask_token_id)

    def decode(self, input_ids: Tensor) -> list[str]:
        """Texts back from ids (B, L), special tokens dropped."""
        return [str(s) for s in self.backend.batch_decode(input_ids.tolist(), skip_special_tokens=True)]


def build_tokenizer(text_config: TextEncoderConfig) -> Tokenizer:
    """The all-MiniLM-L6-v2 tokenizer from the installed package, padding/truncating to max_length."""
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    tokenizer = Tokenizer(backend=backend, max_length=text_config.max_length)
    if (tokenizer.vocab_size, tokenizer.pad_token_id, tokenizer.mask_token_id) != (
        text_config.vocab_size,
        text_config.pad_token_id,
        text_config.mask_token_id,
    ):
        raise ValueError(
            "the text config's vocab_size/pad_token_id/mask_token_id do not match the MiniLM tokenizer "
            f"({tokenizer.vocab_size}, {tokenizer.pad_token_id}, {tokenizer.mask_token_id}); keep the defaults"
        )
    return tokenizer
