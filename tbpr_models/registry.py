"""The variant registry: CLI name -> (config class, head class), the one table.

The built-in variants are listed in `BUILT_IN`; `register_variant(Config, Head)` adds one more (a
plugin or a test) at run time. Variant modules never import this module, so there is no cycle.
The registry also rebuilds configs by name: `variant_config("channel", reduction=8)` and
`model_config_from_dict(ModelConfig.to_dict())`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tbpr_models.config import ImageEncoderConfig, ModelConfig, TextEncoderConfig, VariantConfig, build
from tbpr_models.encoders.fit import check_fits
from tbpr_models.tokenizer import with_vocabulary
from tbpr_models.variant import BASE_LOSSES, VariantHead
from tbpr_models.variants import (
    channel,
    control,
    cross_fusion,
    cross_scan,
    global_,
    gpo,
    hard_align,
    hard_topk,
    mixed,
    nonlocal_,
    spatial,
)


@dataclass(frozen=True)
class VariantSpec:
    name: str
    config_cls: type[VariantConfig]
    head_cls: type[VariantHead]


VARIANTS: dict[str, VariantSpec] = {}

BUILT_IN: tuple[tuple[type[VariantConfig], type[VariantHead]], ...] = (
    (global_.GlobalConfig, global_.GlobalHead),
    (spatial.SpatialConfig, spatial.SpatialHead),
    (channel.ChannelConfig, channel.ChannelHead),
    (mixed.MixedConfig, mixed.MixedHead),
    (nonlocal_.NonLocalConfig, nonlocal_.NonLocalHead),
    (cross_scan.CrossScanConfig, cross_scan.CrossScanHead),
    (cross_fusion.CrossFusionConfig, cross_fusion.CrossFusionHead),
    (hard_topk.HardTopkConfig, hard_topk.HardTopkHead),
    (hard_align.HardAlignConfig, hard_align.HardAlignHead),
    (control.ControlTopHalfConfig, control.ControlTopHalfHead),
    (control.ControlAAConfig, control.ControlAAHead),
    (gpo.GpoConfig, gpo.GpoHead),
)


def register_variant(config_cls: type[VariantConfig], head_cls: type[VariantHead]) -> VariantSpec:
    """Register `head_cls` under the default `kind` of `config_cls` (the variant's CLI name)."""
    kind = {f.name: f for f in dataclasses.fields(config_cls)}["kind"].default
    if not isinstance(kind, str):
        raise TypeError(f"{config_cls.__name__}.kind needs a string default, the variant's CLI name")
    if not issubclass(head_cls, VariantHead):
        raise TypeError(f"{head_cls.__name__} is not a VariantHead")
    known = VARIANTS.get(kind)
    if known is not None and (known.head_cls, known.config_cls) != (head_cls, config_cls):
        raise ValueError(f"variant {kind!r} is registered twice")
    VARIANTS[kind] = VariantSpec(name=kind, config_cls=config_cls, head_cls=head_cls)
    return VARIANTS[kind]


for _config_cls, _head_cls in BUILT_IN:
    register_variant(_config_cls, _head_cls)


def get_variant(name: str) -> VariantSpec:
    """The spec of variant `name`, or a ValueError listing the known names."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def variant_config(name: str, **overrides: Any) -> VariantConfig:
    """The config of variant `name` (CLI name, e.g. "channel") with its defaults and `overrides`."""
    return build(get_variant(name).config_cls, {"kind": name, **overrides})


def loss_names() -> list[str]:
    """Every loss a model can have: the base losses and each registered head's (`loss_weights` keys)."""
    return sorted({*BASE_LOSSES, *(n for spec in VARIANTS.values() for n in spec.head_cls.loss_names)})


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from `ModelConfig.to_dict()` output (e.g. after a JSON round trip); unknown
    keys or an unknown variant are a ValueError. A `clip` text encoder's vocabulary fields are read
    from its folder's tokenizer (a missing folder is a FileNotFoundError)."""
    data = dict(data)
    if "variant" not in data:
        raise ValueError("model config has no 'variant'; expected the output of ModelConfig.to_dict()")
    variant = data.pop("variant")
    for name in ("variant", "image", "text", "loss_weights"):
        if not isinstance(data.get(name, variant if name == "variant" else {}), dict):
            raise ValueError(f"{name} must be a table of settings, got {data.get(name, variant)!r}")
    unknown = sorted(set(data.get("loss_weights", {})) - set(loss_names()))
    if unknown:
        raise ValueError(f"loss_weights names unknown loss(es) {unknown}; the losses are {loss_names()}")
    text = with_vocabulary(build(TextEncoderConfig, data.get("text", {}), "text."))
    image = build(ImageEncoderConfig, data.get("image", {}), "image.")
    check_fits(image, text)
    return build(
        ModelConfig,
        {
            **data,
            "variant": build(get_variant(str(variant.get("kind"))).config_cls, variant, "variant."),
            "image": image,
            "text": text,
        },
    )
