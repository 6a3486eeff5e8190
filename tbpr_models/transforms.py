"""Image preprocessing with Pillow and torch only (torchvision does not import against our CPU torch).

`ImageTransform(height, width, train)(image) -> (3, H, W)` float tensor normalised with the ImageNet
mean and std (CLIP's own for the CLIP vision tower: `image_transform(config, train)`). Training adds a random horizontal flip (our captions do not name sides), padding plus a
random crop, and mild brightness/contrast/saturation jitter; never a hue shift, since colours are
what the captions describe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor

from tbpr_models.config import ImageEncoderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # what CLIP's image processor normalises with
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageTransform:
    height: int
    width: int
    train: bool = False
    pad_fraction: float = 0.1  # train: pad by this fraction of each side, then crop back
    jitter: float = 0.2  # train: brightness/contrast/saturation factors in [1 - jitter, 1 + jitter]
    flip: bool = True  # train: random horizontal flip
    seed: int | None = None  # None: the process-wide `random` state (seeded per DataLoader worker)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    _rng: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random if self.seed is None else random.Random(self.seed)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> Tensor:
        """(3, H, W) pixels; training draws its augmentation from `rng` when given (else `seed`'s)."""
        image = image.convert("RGB").resize((self.width, self.height), Image.Resampling.BILINEAR)
        if self.train:
            image = self._augment(image, rng or self._rng)
        return to_tensor(image, self.mean, self.std)

    def _augment(self, image: Image.Image, rng: Any) -> Image.Image:
        if self.flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        pad_x, pad_y = round(self.width * self.pad_fraction), round(self.height * self.pad_fraction)
        if pad_x or pad_y:
            padded = ImageOps.expand(image, border=(pad_x, pad_y), fill=0)
            left, top = rng.randint(0, 2 * pad_x), rng.randint(0, 2 * pad_y)
            image = padded.crop((left, top, left + self.width, top + self.height))
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(1 - self.jitter, 1 + self.jitter))
        return image


def to_tensor(
    image: Image.Image,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Tensor:
    """RGB image -> (3, H, W) float32, scaled to [0, 1] then normalised with `mean`/`std` (ImageNet's)."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    pixels = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def image_transform(config: ImageEncoderConfig, train: bool = False) -> ImageTransform:
    """The transform an image encoder expects: its size, and CLIP's normalisation for `clip`."""
    if config.kind == "clip":
        return ImageTransform(config.height, config.width, train=train, mean=CLIP_MEAN, std=CLIP_STD)
    return ImageTransform(config.height, config.width, train=train)
