"""tbpr_models: text-to-image person retrieval models (torch and transformers only).

Public API: build a model from a `ModelConfig` with `build_model`, encode with `encode_images` /
`encode_texts`, score with `similarity`, train with `losses`; checkpoints with `save_checkpoint` /
`load_checkpoint`; inputs with `build_tokenizer` and `ImageTransform`; evaluation with
`retrieval_metrics`.
"""

from tbpr_models.checkpoint import load_checkpoint, save_checkpoint
from tbpr_models.config import (
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
    VariantConfig,
    variant_config,
)
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.metrics import retrieval_metrics
from tbpr_models.model import RetrievalModel
from tbpr_models.registry import VARIANTS, build_model, load_variants, register_variant
from tbpr_models.tokenizer import Tokenizer, build_tokenizer
from tbpr_models.transforms import ImageTransform
from tbpr_models.variant import HeadDims, LossContext, VariantHead

load_variants()

__all__ = [
    "VARIANTS",
    "Batch",
    "HeadDims",
    "ImageEncoderConfig",
    "ImageFeatures",
    "ImageTransform",
    "LossContext",
    "ModelConfig",
    "RetrievalModel",
    "TextEncoderConfig",
    "TextFeatures",
    "Tokenizer",
    "VariantConfig",
    "VariantHead",
    "build_model",
    "build_tokenizer",
    "load_checkpoint",
    "register_variant",
    "retrieval_metrics",
    "save_checkpoint",
    "variant_config",
]
