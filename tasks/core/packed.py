"""Arrays stored smaller than they are read.

- `Ragged`: rows of different lengths (captions' word features) stored end to end instead of padded to
  the longest, read back as the zero-padded (rows, L, C) array every consumer expects. On disk: a
  (W, C) `.npy` of the real positions of every row in row order (W = the mask's True count), beside a
  (rows, L) bool mask saying where each row's positions sit. Captions average about half the longest
  one (the main job: 26 of 48 tokens), so this halves what padding stored. Lossless.
- `Quantized`: feature maps (rows, C, ...) stored as uint8 codes with an affine range per row and
  channel (lo, step), read back as float32 `lo + code * step`: a quarter of float32, half of float16,
  each value within step / 2 = (max - min) / 510 of the original (over that row and channel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.core.errors import TbprError


class _Rows:
    """What `Ragged` and `Quantized` share: read-only rows of an array stored smaller than it reads,
    with `shape`, `len` and `np.asarray` (the whole array, decoded) like an ndarray's."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class Ragged(_Rows):
    """A read-only (rows, L, C) array over `values` (W, C) placed where `mask` (rows, L) is True, row by
    row; positions the mask leaves out read as zeros. Indexing takes rows (an int, slice, int or bool
    array) and optionally a slice of positions: `ragged[rows]`, `ragged[start:stop, :length]`."""

    def __init__(self, values: np.ndarray, mask: np.ndarray) -> None:
        if mask.ndim != 2 or values.ndim < 1:
            raise TbprError(
                f"ragged rows need a (rows, L) mask and (W, ...) values, got {mask.shape}, {values.shape}"
            )
        counts = np.asarray(mask, dtype=bool).sum(axis=1)
        if int(counts.sum()) != len(values):
            raise TbprError(
                f"ragged rows: the mask marks {int(counts.sum())} positions, the values hold {len(values)}"
            )
        self.values, self.mask = values, mask
        self.offsets = np.concatenate([[0], np.cumsum(counts)])  # (rows + 1,) where each row starts
        self.shape = (mask.shape[0], mask.shape[1], *values.shape[1:])
        self.dtype = values.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, positions = key if isinstance(key, tuple) else (key, slice(None))
        index = np.arange(self.shape[0])[rows]
        single = index.ndim == 0
        index = np.atleast_1d(index)
        mask = np.asarray(self.mask[index], dtype=bool)  # (B, L)
        within = np.cumsum(mask, axis=1) - 1  # each real position's rank within its row
        source = (self.offsets[index][:, None] + within)[mask]  # (real positions,) rows of `values`
        out = np.zeros((len(index), *self.shape[1:]), dtype=self.dtype)
        out[mask] = self.values[source]
        out = out[:, positions]
        return out[0] if single else out


def open_ragged(values: Path, mask: np.ndarray) -> Ragged:
    """The ragged array of the `.npy` file `values`, memory-mapped, placed by `mask`."""
    return Ragged(np.load(values, mmap_mode="r"), mask)


def real_positions(padded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(W, C) the positions of `padded` (B, L, C) where `mask` (B, L) is True, in row order: what a
    block of rows adds to a ragged file."""
    return np.asarray(padded)[np.asarray(mask, dtype=bool)]


class Quantized(_Rows):
    """A read-only float32 (rows, C, ...) array over uint8 `codes` (rows, C, ...) and `ranges` (rows, C, 2)
    float32 (lo, step); indexing takes rows (an int, slice, int or bool array)."""

    def __init__(self, codes: np.ndarray, ranges: np.ndarray) -> None:
        if codes.dtype != np.uint8 or ranges.shape != (*codes.shape[:2], 2):
            raise TbprError(
                f"quantized rows need uint8 codes (rows, C, ...) and (rows, C, 2) ranges, got {codes.dtype} "
                f"{codes.shape} and {ranges.shape}"
            )
        self.codes, self.ranges = codes, ranges
        self.shape, self.ndim, self.dtype = codes.shape, codes.ndim, np.dtype(np.float32)

    def __getitem__(self, rows: Any) -> np.ndarray:
        codes = torch.from_numpy(np.array(self.codes[rows]))  # a copy: the file stays read-only
        ranges = torch.from_numpy(np.array(self.ranges[rows], dtype=np.float32))
        extra = (None,) * (codes.ndim - ranges.ndim + 1)  # broadcast over the positions
        lo, step = ranges[..., 0][(..., *extra)], ranges[..., 1][(..., *extra)]
        return torch.addcmul(lo, codes.float(), step).numpy()  # torch: vectorised, numpy's uint8 loop is not


def quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 (rows, C, ...), ranges float32 (rows, C, 2)) of float `values` (rows, C, ...): per row
    and channel, lo = the minimum, step = (max - min) / 255 (1 where they are equal), the codes rounded."""
    flat = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).flatten(2)  # (rows, C, P)
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    step = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(lo))
    codes = ((flat - lo[..., None]) / step[..., None]).round_().clamp_(0, 255).to(torch.uint8)
    return codes.reshape(values.shape).numpy(), torch.stack([lo, step], dim=-1).numpy()
