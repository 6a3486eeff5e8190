"""tbpr_models: text-to-image person retrieval models (torch and transformers only).

Public API: build a model from a `ModelConfig` with `build_model`, encode with `encode_images` /
`encode_texts`, score with `similarity`, train with `losses` (`parameter_counts`: what trains);
checkpoints with `save_checkpoint` / `load_checkpoint`; inputs with `build_tokenizer` and `image_transform`; evaluation with
`retrieval_metrics`; variants by name with `VARIANTS`, `variant_config` and `register_variant`.
"""

from tbpr_models.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from tbpr_models.config import ImageEncoderConfig, ModelConfig, TextEncoderConfig, VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.metrics import PerQuery, per_query_metrics, retrieval_metrics
from tbpr_models.model import RetrievalModel, build_model, parameter_counts
from tbpr_models.registry import (
    VARIANTS,
    VariantSpec,
    get_variant,
    model_config_from_dict,
    register_variant,
    variant_config,
)
from tbpr_models.tokenizer import Tokenizer, build_tokenizer
from tbpr_models.transforms import ImageTransform, image_transform
from tbpr_models.variant import HeadDims, LossContext, PairScorerConfig, PairScorerHead, VariantHead

__all__ = [
    "VARIANTS",
    "Batch",
    "HeadDims",
    "ImageEncoderConfig",
    "ImageFeatures",
    "ImageTransform",
    "LossContext",
    "ModelConfig",
    "PairScorerConfig",
    "PairScorerHead",
    "PerQuery",
    "RetrievalModel",
    "TextEncoderConfig",
    "TextFeatures",
    "Tokenizer",
    "VariantConfig",
    "VariantHead",
    "VariantSpec",
    "build_model",
    "build_tokenizer",
    "get_variant",
    "image_transform",
    "is_checkpoint",
    "load_checkpoint",
    "model_config_from_dict",
    "parameter_counts",
    "per_query_metrics",
    "register_variant",
    "retrieval_metrics",
    "save_checkpoint",
    "variant_config",
]
