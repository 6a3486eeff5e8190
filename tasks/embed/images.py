"""The one image-encoding loop of every embed: a split's gallery from pixels or from the feature cache,
each shard of a sharded gallery on its Dask worker, and the new or changed files of an image folder.

A batch goes through the function that encodes its inputs (`model.encode_images` on pixels, or the
stages above the cache) and the head's `compact_images` (what EMB stores), under the embed's
precision; its locals are written as float16 or 8-bit rows of an `.npy` file (`RowsFile`), its
globals kept as float32.
Dimension letters: B batch, G gallery, N regions, D dim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from tasks.core.device import autocast
from tasks.core.packed import RowsFile
from tbpr_models import ImageFeatures

# a batch of inputs (pixels (B, 3, H, W) or cached activations (B, C, h, w)) and what encodes it
Batch = tuple[torch.Tensor, Callable[[torch.Tensor], ImageFeatures]]


@dataclass(frozen=True)
class ImageBlock:
    """One encoded batch: globals (B, D) float32, locals (B, N, D) float32 (written as float16 or 8-bit),
    and whether the locals are unit (`ImageFeatures.unit_local`)."""

    global_: np.ndarray
    local: np.ndarray
    unit_local: bool


def encode_batches(
    model: Any, batches: Iterable[Batch], device: torch.device, precision: str
) -> Iterator[ImageBlock]:
    """Each batch encoded on `device` under `precision`, compacted by the head, as numpy."""
    for inputs, encode in batches:
        with torch.inference_mode():  # left between batches: the caller's code runs as usual
            with autocast(device, precision):
                feats = model.head.compact_images(encode(inputs.to(device)))
            block = ImageBlock(
                global_=feats.global_.float().cpu().numpy(),  # (B, D)
                local=feats.local.float().cpu().numpy(),  # (B, N, D)
                unit_local=feats.unit_local,
            )
        yield block


@dataclass
class EncodedImages:
    """What `encode_images` wrote: globals (S, D) float32 of the rows it encoded, whether every local
    is unit (True when it encoded nothing), and the rows it filled of the locals file."""

    global_: np.ndarray
    unit_local: bool
    rows: int


def encode_images(
    model: Any,
    batches: Iterable[Batch],
    local: Path,
    *,
    capacity: int,
    device: torch.device,
    precision: str,
    start: int = 0,
    create: bool = True,
    progress: str | None = None,
    dtype: str = "float16",
) -> EncodedImages:
    """Encode `batches` (`encode_batches`) and write their locals into the `.npy` file `local`, rows
    `start` onwards, as `dtype` (`RowsFile`: float16, or 8-bit codes with a range per region): with
    `create`, a new (capacity, N, D) file made at the first batch; without, one that exists (a shard
    writes its rows into the file the driver made). `progress`: a bar's label."""
    array: RowsFile | None = None if create else RowsFile(local, (), dtype, create=False)
    globals_: list[np.ndarray] = []
    row, unit = start, True
    with Progress(transient=True, disable=progress is None) as bar:
        task = bar.add_task(progress or "", total=capacity - start)
        for block in encode_batches(model, batches, device, precision):
            if array is None:
                array = RowsFile(local, (capacity, *block.local.shape[1:]), dtype)  # (G, N, D)
            array.write(row, block.local)
            globals_.append(block.global_)
            unit &= block.unit_local
            row += len(block.local)
            bar.advance(task, len(block.local))
    dim = 0 if array is None else array.values.shape[2]
    if array is not None:
        array.flush()
    del array
    return EncodedImages(
        global_=np.concatenate(globals_) if globals_ else np.empty((0, dim), np.float32),
        unit_local=unit,
        rows=row - start,
    )
