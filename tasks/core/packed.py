"""Arrays stored smaller than they are read.

- `Ragged`: rows of different lengths (captions' word features) stored end to end instead of padded to
  the longest, read back as the zero-padded (rows, L, C) array every consumer expects. On disk: a
  (W, C) `.npy` of the real positions of every row in row order (W = the mask's True count), beside a
  (rows, L) bool mask saying where each row's positions sit. Captions average about half the longest
  one (the main job: 26 of 48 tokens), so this halves what padding stored. Lossless.
- `Quantized`: arrays stored as uint8 codes with an affine range (lo, step) per leading index, kept in
  float16, read back as float32 `lo + code * step`: a quarter of float32, half of float16, each value
  within step / 2 ~ (max - min) / 510 of the original (over what shares the range; `quantize`).
  Feature maps (rows, C, ...) take a range per row and channel; word features (W, C) and EMB's local
  tokens (G, N, D) one per word or region.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.core.errors import TbprError


class _Rows(ABC):
    """What `Ragged` and `Quantized` share: read-only rows of an array stored smaller than it reads,
    with `shape`, `len` and `np.asarray` (the whole array, decoded) like an ndarray's; each subclass
    says how rows are read back (`__getitem__`)."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    @abstractmethod
    def __getitem__(self, key: Any) -> np.ndarray: ...

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class Ragged(_Rows):
    """A read-only (rows, L, C) array over `values` (W, C) placed where `mask` (rows, L) is True, row by
    row; positions the mask leaves out read as zeros. Indexing takes rows (an int, slice, int or bool
    array) and optionally a slice of positions: `ragged[rows]`, `ragged[start:stop, :length]`."""

    def __init__(self, values: np.ndarray | Quantized, mask: np.ndarray) -> None:
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


def real_positions(padded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(W, C) the positions of `padded` (B, L, C) where `mask` (B, L) is True, in row order: what a
    block of rows adds to a ragged file."""
    return np.asarray(padded)[np.asarray(mask, dtype=bool)]


class Quantized(_Rows):
    """A read-only float32 array over uint8 `codes` (rows, ...) and float `ranges` (lo, step) of the
    leading indices (rows, C, 2) or (rows, 2): a range per row and channel, or per row; indexing takes
    rows (an int, slice, int or bool array)."""

    def __init__(self, codes: np.ndarray, ranges: np.ndarray) -> None:
        leading = ranges.shape[:-1]  # the indices that own a range
        fits = codes.dtype == np.uint8 and ranges.shape[-1:] == (2,) and 1 <= len(leading) <= codes.ndim
        if not fits or codes.shape[: len(leading)] != leading:
            raise TbprError(
                f"quantized rows need uint8 codes (rows, ...) and (rows, 2) or (rows, C, 2) ranges, got "
                f"{codes.dtype} {codes.shape} and {ranges.shape}"
            )
        self.codes, self.ranges = codes, ranges
        self.shape, self.ndim, self.dtype = codes.shape, codes.ndim, np.dtype(np.float32)

    def take(self, rows: slice) -> Quantized:
        """Rows `rows` as a `Quantized` over views of the same files: nothing is read or decoded."""
        return Quantized(self.codes[rows], self.ranges[rows])

    def __getitem__(self, rows: Any) -> np.ndarray:
        codes = torch.from_numpy(np.array(self.codes[rows]))  # a copy: the file stays read-only
        ranges = torch.from_numpy(np.array(self.ranges[rows])).float()  # float16 -> 32 vectorised by torch
        extra = (None,) * (codes.ndim - ranges.ndim + 1)  # broadcast over the positions
        lo, step = ranges[..., 0][(..., *extra)], ranges[..., 1][(..., *extra)]
        return torch.addcmul(lo, codes.float(), step).numpy()  # torch: vectorised, numpy's uint8 loop is not


def quantize(values: np.ndarray, axes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 shaped like `values`, ranges float16 (*values.shape[:axes], 2)) of float `values`: per
    index of the first `axes` dimensions (2: row and channel of (rows, C, ...); 1: row of (W, C)),
    lo = the minimum rounded down to float16, step = (max - lo) / 255 rounded up to float16 (1 where
    max = lo), the codes rounded: every value is within step / 2 <= (max - min + ulp(min)) / 510 * (1 +
    2**-10), ulp being float16's spacing at min. Values beyond float16's range are an error."""
    flat = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).flatten(axes)  # (..., P)
    lo, hi = flat.amin(dim=-1).numpy(), flat.amax(dim=-1).numpy()
    largest = float(np.finfo(np.float16).max)
    if lo.size and not (
        np.isfinite(lo).all() and np.isfinite(hi).all() and -largest <= lo.min() and hi.max() <= largest
    ):
        raise TbprError(f"cannot quantize values beyond float16's range (+-{largest:g}) or not finite")
    lo16 = lo.astype(np.float16)
    lo16 = np.where(lo16 > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)  # rounded down
    wanted = (hi - lo16.astype(np.float32)) / 255
    step16 = wanted.astype(np.float16)
    step16 = np.where(step16 < wanted, np.nextafter(step16, np.float16(np.inf)), step16)  # rounded up
    step16 = np.where(wanted > 0, step16, np.float16(1))
    ranges = np.stack([lo16, step16], axis=-1)
    lo32, step32 = (torch.from_numpy(ranges[..., k].astype(np.float32))[..., None] for k in (0, 1))
    codes = ((flat - lo32) / step32).round_().clamp_(0, 255).to(torch.uint8)
    return codes.reshape(values.shape).numpy(), ranges


STORED_DTYPES = ("float16", "uint8")  # how `RowsFile` stores rows: float16 values, or 8-bit `quantize` codes


def check_stored_dtype(dtype: str, what: str = "rows") -> str:
    """`dtype` when it is one of STORED_DTYPES, else a TbprError saying what `what` may be stored as."""
    if dtype not in STORED_DTYPES:
        raise TbprError(f"{what} must be one of {', '.join(STORED_DTYPES)}, not {dtype!r}")
    return dtype


def ranges_path(npy: Path) -> Path:
    """`<stem>_ranges.npy` beside `npy`: the (lo, step) ranges of its 8-bit codes."""
    return npy.with_name(f"{npy.stem}_ranges.npy")


class RowsFile:
    """An `.npy` of rows written block by block, memory-mapped: float16 values, or (`dtype` "uint8") uint8
    codes beside `ranges_path(path)` (`quantize`: a range per index of the first `ranged` dimensions, 2
    for a row and channel of (rows, C, ...) or a row and region of (G, N, D), 1 for a row of (W, C)).
    `create` makes new files of `shape`; without it, files another process made are opened for writing
    (each writer fills its own rows)."""

    def __init__(
        self, path: Path, shape: tuple[int, ...], dtype: str, ranged: int = 2, *, create: bool = True
    ) -> None:
        self.quantized, self.ranged = check_stored_dtype(dtype) == "uint8", ranged
        if not create:
            self.values = np.load(path, mmap_mode="r+")
            self.ranges = np.load(ranges_path(path), mmap_mode="r+") if self.quantized else None
        elif self.quantized:
            self.values = np.lib.format.open_memmap(path, "w+", np.uint8, shape)
            self.ranges = np.lib.format.open_memmap(ranges_path(path), "w+", np.float16, (*shape[:ranged], 2))
        else:
            self.values = np.lib.format.open_memmap(path, "w+", np.float16, shape)
            self.ranges = None

    def write(self, start: int, block: np.ndarray) -> None:
        if self.ranges is not None:
            codes, ranges = quantize(block, self.ranged)
            self.values[start : start + len(block)] = codes
            self.ranges[start : start + len(block)] = ranges
        else:
            self.values[start : start + len(block)] = block

    def put(self, row: int, source: np.ndarray | Quantized, source_row: int) -> None:
        """Row `row` from `source[source_row]` as stored: 8-bit codes and their range copied as they are
        into an 8-bit file (nothing re-quantized), else the values, quantized or cast as this file stores."""
        if self.ranges is not None and isinstance(source, Quantized):
            self.values[row] = source.codes[source_row]
            self.ranges[row] = source.ranges[source_row]
        else:
            self.write(row, np.asarray(source[source_row : source_row + 1]))

    def flush(self) -> None:
        self.values.flush()
        if self.ranges is not None:
            self.ranges.flush()


def open_rows(path: Path, dtype: str) -> np.ndarray | Quantized:
    """The rows `RowsFile` wrote to `path` as `dtype`, memory-mapped: float16 values as they are, 8-bit
    codes as a `Quantized` over them and their ranges."""
    check_stored_dtype(dtype, f"{path}'s rows")
    values = np.load(path, mmap_mode="r")
    if dtype == "uint8":
        return Quantized(values, np.load(ranges_path(path), mmap_mode="r"))
    return values
