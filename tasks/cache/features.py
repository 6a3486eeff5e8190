"""The feature cache: the frozen lower stages of both encoders, computed once per (DATA, encoders, split
point) and stored float16, memory-mapped, so training runs only the trainable top (README, "Feature cache").

```
$TBPR_HOME/cache/features/<key>/cache.json               key, DATA hash, stages, shapes per split
$TBPR_HOME/cache/features/<key>/<split>/image_ids.npy     (G,) int64, the split's image order
$TBPR_HOME/cache/features/<key>/<split>/images.npy        (G, C, h, w) float16: input of image stage s
                                                          (dtype "uint8": codes, beside images_ranges.npy
                                                          (G, C, 2) float16 lo and step: `tasks.core.packed`)
$TBPR_HOME/cache/features/<key>/train/images_flip.npy   (G, C, h, w) float16: the same, mirrored (train only:
                                                          the augmentation; val and test are never mirrored)
                                                          (uint8: beside images_flip_ranges.npy)
$TBPR_HOME/cache/features/<key>/<split>/caption_ids.npy   (Q,) int64, the split's caption order
$TBPR_HOME/cache/features/<key>/<split>/text_mask.npy     (Q, L) bool: each caption's real tokens (L: the longest)
$TBPR_HOME/cache/features/<key>/<split>/texts.npy         (W, C') float16: hidden states after text stage t of
                                                          the real tokens only, caption after caption (ragged:
                                                          read back as (Q, L, C'), zeros where the mask is off)
                                                          (uint8: codes, beside texts_ranges.npy (W, 2)
                                                          float16, a lo and step per word)
```

The key hashes the DATA content hash, both encoder configs, the split point, the storage dtype and the
frozen stages' weights and buffers, so a fine-tuned backbone gets its own cache and a re-run finds the finished one.
The folder is written under a temporary name, batch by batch into memory-mapped files (a dataset never
has to fit in memory), and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.data import DataLoader

from tasks.core.device import autocast
from tasks.core.env import home
from tasks.core.errors import TbprError
from tasks.core.files import remove_stale_temps, temp_path, write_json_atomic
from tasks.core.packed import STORED_DTYPES, Quantized, Ragged, RowsFile, open_rows, real_positions
from tasks.data.check import content_hash
from tasks.data.reader import ImageDataset, PreparedData, SplitData, Tokenize
from tbpr_models import RetrievalModel, image_transform
from tbpr_models.config import build

log = logging.getLogger(__name__)

CACHE_MANIFEST = "cache.json"
# 2: mirrored images for the train split only; 3: ragged texts; 4: 8-bit words as uint8 codes; 5: the
# 8-bit ranges in float16
FORMAT = 5
FLIPPED_SPLITS = ("train",)
CACHE_DTYPES = STORED_DTYPES  # how activations are stored: exact to float16, or 8-bit


@dataclass(frozen=True)
class SplitPoint:
    """Where the encoders are cut: the cache holds the input of image stage `image` and the hidden
    states after the lowest `text` text stages; training runs the stages above."""

    image: int
    text: int


def split_point(model: RetrievalModel) -> SplitPoint:
    """The model's frozen stages: everything below them can be cached."""
    image, text = model.image_encoder.frozen_stages, model.text_encoder.frozen_stages
    if image == 0 or text == 0:
        raise TbprError(
            "features = 'cached' needs frozen lower stages in both encoders: set model.image.freeze = true "
            "or model.image.freeze_stages > 0, and model.text.freeze_embeddings = true"
        )
    return SplitPoint(image, text)


def _weights_digest(modules: Sequence[torch.nn.Module]) -> str:
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode() + b"\0")
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# Which stages train is the split point's business, not the cache's: a lower cache stays valid for a
# model that freezes more, and can seed its cache (`build_cache` finds it).
_TRAINING_FIELDS = {"freeze", "freeze_stages", "freeze_layers", "freeze_embeddings"}


def _encoder_settings(config: object) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if k not in _TRAINING_FIELDS}


def data_hash(data: PreparedData) -> str:
    """DATA's own content hash (of its Parquet bytes, as EMB records): DATA edited or re-prepared keys
    another cache."""
    return content_hash(data.path)


def cache_key(data: PreparedData, model: RetrievalModel, point: SplitPoint, dtype: str = "float16") -> str:
    """Identity of a cache: DATA content, encoder configs, split point, frozen weights."""
    image_stages = model.image_encoder.stage_modules()[: point.image]
    text_stages = model.text_encoder.stage_modules()[: point.text]
    blob = {
        "format": FORMAT,
        "data": data_hash(data),
        "image": _encoder_settings(model.config.image),
        "text": _encoder_settings(model.config.text),
        "point": point.__dict__,
        "dtype": dtype,
        "image_weights": _weights_digest([m for stage in image_stages for m in stage]),
        "text_weights": _weights_digest(text_stages),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CachedSplit:
    """One split's cached activations, memory-mapped (read-only), in the split's own order."""

    image_ids: np.ndarray  # (G,)
    images: np.ndarray | Quantized  # (G, C, h, w) float16, or float32 read from uint8 codes
    images_flip: np.ndarray | Quantized | None  # the same, mirrored; train only (FLIPPED_SPLITS)
    caption_ids: np.ndarray  # (Q,)
    texts: Ragged  # (Q, L, C') float16 (or float32 read from uint8 codes), zeros past each caption's end

    def check(self, split: SplitData, folder: Path) -> None:
        """TbprError unless the cache rows are the split's images and captions, in its order."""
        if not (
            np.array_equal(self.image_ids, split.image_ids)
            and np.array_equal(self.caption_ids, split.caption_ids)
        ):
            raise TbprError(
                f"feature cache {folder} does not match split {split.name!r}; delete it to rebuild"
            )


@dataclass(frozen=True)
class FeatureCache:
    path: Path
    key: str
    point: SplitPoint
    splits: dict[str, CachedSplit]


def open_cache(path: Path) -> FeatureCache:
    """A finished cache folder, memory-mapped; TbprError when it is missing or incomplete."""
    manifest_file = path / CACHE_MANIFEST
    if not manifest_file.is_file():
        raise TbprError(f"{path} is not a finished feature cache (no {CACHE_MANIFEST})")
    manifest = json.loads(manifest_file.read_text())
    splits = {}
    try:
        dtype = manifest["dtype"]
        for name in manifest["splits"]:
            folder = path / name
            splits[name] = CachedSplit(
                np.load(folder / "image_ids.npy", mmap_mode="r"),
                open_rows(folder / "images.npy", dtype),
                open_rows(folder / "images_flip.npy", dtype) if name in FLIPPED_SPLITS else None,
                np.load(folder / "caption_ids.npy", mmap_mode="r"),
                Ragged(open_rows(folder / "texts.npy", dtype), np.load(folder / "text_mask.npy")),
            )
        point = build(SplitPoint, manifest["point"])
        key = manifest["key"]
        if not isinstance(key, str):
            raise TypeError(f"key is {key!r}, not a string")
    except (OSError, ValueError, KeyError, TypeError, TbprError) as exc:
        raise TbprError(f"feature cache {path} is damaged ({exc}); delete it to rebuild") from exc
    return FeatureCache(path, key, point, splits)


def find_cache(data: PreparedData, model: RetrievalModel, split: str) -> FeatureCache | None:
    """The finished cache of `model`'s frozen stages on DATA that holds `split`, when there is one (the
    float16 one before an 8-bit one): a model trained on the cache (its frozen weights unchanged) is
    embedded from it instead of from pixels."""
    try:
        point = split_point(model)
    except TbprError:  # an encoder with nothing frozen: no cache can stand in for it
        return None
    for dtype in CACHE_DTYPES:
        target = home().feature_cache / cache_key(data, model, point, dtype)
        if (target / CACHE_MANIFEST).is_file():
            cache = open_cache(target)
            if split in cache.splits:
                return cache
    return None


def build_cache(
    data: PreparedData,
    model: RetrievalModel,
    tokenize: Tokenize,
    *,
    splits: Sequence[str] = ("train", "val", "test"),
    root: Path | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
    batch_size: int = 128,
    progress: bool = True,
    dtype: str = "float16",
) -> FeatureCache:
    """Encode the frozen lower stages of every image (and its mirror) and caption of `splits` once;
    a finished cache with the same key is reused as it is (a re-run is a no-op). `dtype` stores the
    image activations as float16 or as 8-bit codes (`tasks.core.packed.Quantized`)."""
    if dtype not in CACHE_DTYPES:
        raise TbprError(f"cache dtype {dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
    point = split_point(model)
    key = cache_key(data, model, point, dtype)
    target = (root or home().feature_cache) / key
    if (target / CACHE_MANIFEST).is_file():
        log.info("feature cache %s is up to date", target)
        return open_cache(target)
    device = device or torch.device("cpu")
    base = _lower_cache(target.parent, data, model, point, dtype)
    if base is not None:
        log.info("building feature cache %s from the lower cache %s", key, base.path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)  # what a killed build left
    staging = temp_path(target)
    staging.mkdir()
    was_training = model.training
    model.eval()
    try:
        shapes = {}
        total = sum(len(data.splits[s].image_ids) + len(data.splits[s].caption_ids) for s in splits)
        with _bar(progress, total) as bar:
            for name in splits:
                lower = None if base is None else (base.splits[name], base.point)
                how = Encoding(device, precision, batch_size, dtype)
                shapes[name] = _write_split(
                    staging / name, data.splits[name], model, tokenize, point, how, bar, lower
                )
        manifest: dict[str, Any] = {
            "key": key,
            "data": str(data.path),
            "content_hash": data_hash(data),
            "point": point.__dict__,
            "image": vars(model.config.image),
            "text": vars(model.config.text),
            "precision": precision,
            "dtype": dtype,
            "from": None if base is None else base.key,
            "splits": shapes,
        }
        write_json_atomic(staging / CACHE_MANIFEST, manifest, indent=1, default=str)
        try:
            staging.rename(target)
        except OSError:
            if not (target / CACHE_MANIFEST).is_file():  # not a concurrent builder finishing first
                raise
    finally:
        model.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    log.info("feature cache written to %s", target)
    return open_cache(target)


def _lower_cache(
    root: Path, data: PreparedData, model: RetrievalModel, point: SplitPoint, dtype: str
) -> FeatureCache | None:
    """A finished cache under `root` of the same DATA and encoders, cut lower than `point`, whose frozen
    weights are this model's: the stages between can run on it instead of on pixels and words."""
    found: list[tuple[SplitPoint, Path]] = []
    content = data_hash(data)
    for manifest_file in root.glob(f"*/{CACHE_MANIFEST}") if root.is_dir() else []:
        try:
            manifest = json.loads(manifest_file.read_text())
            lower = SplitPoint(**manifest["point"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if manifest.get("content_hash") != content or lower == point:
            continue
        if lower.image <= point.image and lower.text <= point.text:
            found.append((lower, manifest_file.parent))
    for lower, folder in sorted(found, key=lambda f: (f[0].image, f[0].text), reverse=True):
        if cache_key(data, model, lower, dtype) == folder.name:
            return open_cache(folder)
    return None


@dataclass(frozen=True)
class Encoding:
    device: torch.device
    precision: str
    batch_size: int
    dtype: str = "float16"


@contextmanager
def _bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A transient progress bar over images + captions; yields `advance(count)`."""
    columns = (TextColumn("feature cache"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not enabled, transient=True) as progress:
        task = progress.add_task("cache", total=total)
        yield lambda count: progress.update(task, advance=count)


@torch.inference_mode()
def _write_split(
    folder: Path,
    split: SplitData,
    model: RetrievalModel,
    tokenize: Tokenize,
    point: SplitPoint,
    how: Encoding,
    advance: Callable[[int], None],
    lower: tuple[CachedSplit, SplitPoint] | None = None,
) -> dict[str, Any]:
    """Write one split's activations; from a lower cache's (`lower`) when given, else from the images."""
    folder.mkdir()
    np.save(folder / "image_ids.npy", split.image_ids)
    np.save(folder / "caption_ids.npy", split.caption_ids)
    encoder, device = model.image_encoder, how.device
    image_config = model.config.image
    probe = torch.zeros(1, 3, image_config.height, image_config.width, device=device)
    shape = (len(split.image_ids), *encoder.run(probe, 0, point.image).shape[1:])
    images = RowsFile(folder / "images.npy", shape, how.dtype)
    flips = RowsFile(folder / "images_flip.npy", shape, how.dtype) if split.name in FLIPPED_SPLITS else None
    for start, plain, mirrored in _image_batches(split, model, how, lower, flips is not None):
        with autocast(device, how.precision):
            plain = encoder.run(plain, 0 if lower is None else lower[1].image, point.image)  # (B, C, h, w)
            if flips is not None and mirrored is not None:
                mirrored = encoder.run(mirrored, 0 if lower is None else lower[1].image, point.image)
                flips.write(start, mirrored.float().cpu().numpy())
        images.write(start, plain.float().cpu().numpy())
        advance(len(plain))
    input_ids, mask = tokenize(split.texts)  # (Q, L) each
    width = max(int(mask.sum(dim=1).max()), 1) if len(mask) else 1
    real = mask[:, :width].bool().numpy()  # (Q, width)
    np.save(folder / "text_mask.npy", real)
    words_shape = (int(real.sum()), model.text_encoder.out_channels)
    texts = RowsFile(folder / "texts.npy", words_shape, how.dtype, ranged=1)  # a range per word
    written = 0
    for start, ids, part in _batches(input_ids[:, :width], mask[:, :width], how.batch_size):
        ids, part = ids.to(device), part.to(device)
        below = None
        if lower is not None:
            below = torch.from_numpy(
                lower[0].texts[start : start + len(ids), : ids.shape[1]].astype(np.float32)
            )
            below = below.to(device)
        with autocast(device, how.precision):
            hidden = model.text_encoder.hidden(
                ids, part, point.text, below, 0 if lower is None else lower[1].text
            )  # (B, L', C')
        words = real_positions(
            hidden.float().cpu().numpy(), real[start : start + len(ids), : hidden.shape[1]]
        )
        texts.write(written, words)
        written += len(words)
        advance(len(ids))
    for array in (images, flips, texts):
        if array is not None:
            array.flush()
    return {"images": list(shape), "texts": [len(real), width, words_shape[1]]}


def _image_batches(
    split: SplitData,
    model: RetrievalModel,
    how: Encoding,
    lower: tuple[CachedSplit, SplitPoint] | None,
    mirror: bool = True,
) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """(first row, input of the first stage to run, the same for the mirrored image or None when
    `mirror` is off) per batch."""
    if lower is not None:
        cached = lower[0]
        for start in range(0, len(cached.images), how.batch_size):
            stop = start + how.batch_size
            flipped = None
            if mirror and cached.images_flip is not None:
                flipped = torch.from_numpy(np.array(cached.images_flip[start:stop])).float().to(how.device)
            yield start, torch.from_numpy(np.array(cached.images[start:stop])).float().to(how.device), flipped
        return
    config = model.config.image
    transform = image_transform(config)
    start = 0
    for pixels in DataLoader(ImageDataset(split, transform), batch_size=how.batch_size):
        pixels = pixels.to(how.device)
        yield start, pixels, pixels.flip(-1) if mirror else None
        start += len(pixels)


def _batches(input_ids: Tensor, mask: Tensor, size: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Caption batches trimmed to their longest caption: (first row, ids (B, L'), mask (B, L'))."""
    for start in range(0, len(input_ids), size):
        part = mask[start : start + size]
        length = max(int(part.sum(dim=1).max()), 1)
        yield start, input_ids[start : start + size, :length], part[:, :length]
