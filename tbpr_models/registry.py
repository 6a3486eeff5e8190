"""Registry of variants: CLI name -> (config class, head class), and `build_model`.

Each module in `tbpr_models/variants/` registers its head with `@register_variant(ItsConfig)`;
the name is the default of the config's `kind` field.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tbpr_models.config import ModelConfig, VariantConfig
from tbpr_models.variant import VariantHead

if TYPE_CHECKING:
    from tbpr_models.model import RetrievalModel


@dataclass(frozen=True)
class VariantSpec:
    name: str
    config_cls: type[VariantConfig]
    head_cls: type[VariantHead]


VARIANTS: dict[str, VariantSpec] = {}


def register_variant(config_cls: type[VariantConfig]) -> Callable[[type[VariantHead]], type[VariantHead]]:
    """Class decorator: register a head class under the default `kind` of `config_cls`."""
    kind_field = {f.name: f for f in dataclasses.fields(config_cls)}["kind"]
    name = kind_field.default
    if not isinstance(name, str):
        raise TypeError(f"{config_cls.__name__}.kind needs a string default, the variant's CLI name")

    def decorate(head_cls: type[VariantHead]) -> type[VariantHead]:
        if name in VARIANTS and VARIANTS[name].head_cls is not head_cls:
            raise ValueError(f"variant {name!r} is registered twice")
        VARIANTS[name] = VariantSpec(name=name, config_cls=config_cls, head_cls=head_cls)
        return head_cls

    return decorate


def load_variants() -> dict[str, VariantSpec]:
    """Import `tbpr_models.variants` (each module registers itself) and return the registry."""
    importlib.import_module("tbpr_models.variants")
    return VARIANTS


def get_variant(name: str) -> VariantSpec:
    """The spec of variant `name`, or a ValueError listing the known names."""
    variants = load_variants()
    if name not in variants:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(variants)}")
    return variants[name]


def build_model(config: ModelConfig, load_pretrained: bool = True) -> RetrievalModel:
    """A `RetrievalModel` for `config`; `load_pretrained=False` skips pretrained weights (checkpoints)."""
    from tbpr_models.model import RetrievalModel

    return RetrievalModel(config, load_pretrained=load_pretrained)
