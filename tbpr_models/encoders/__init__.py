"""Image and text encoders: pixels -> region tokens (B, N, C), words -> word tokens (B, L, C)."""

from tbpr_models.encoders.image import ImageEncoder, build_image_encoder
from tbpr_models.encoders.text import TextEncoder, build_text_encoder

__all__ = ["ImageEncoder", "TextEncoder", "build_image_encoder", "build_text_encoder"]
