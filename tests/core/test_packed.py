"""Ragged rows read back as the padded array they replace, built here position by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.errors import TbprError
from tasks.core.packed import Quantized, Ragged, quantize, real_positions


def _padded_and_mask(
    rng: np.random.Generator, rows: int, width: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """A (rows, width, dim) array whose masked-off positions are zero, and its mask: prefixes of random
    length for most rows, one row with holes (a head's selected words), one empty row."""
    mask = np.arange(width)[None, :] < rng.integers(1, width + 1, size=rows)[:, None]
    mask[1] = rng.random(width) < 0.5
    mask[2] = False
    padded = rng.standard_normal((rows, width, dim)).astype(np.float16)
    padded[~mask] = 0
    return padded, mask


def test_ragged_reads_back_the_padded_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    padded, mask = _padded_and_mask(rng, rows=9, width=7, dim=3)
    values = np.concatenate([padded[r][mask[r]] for r in range(len(mask))])  # row after row, by hand
    np.testing.assert_array_equal(real_positions(padded, mask), values)
    np.save(tmp_path / "values.npy", values)
    ragged = Ragged(np.load(tmp_path / "values.npy", mmap_mode="r"), mask)
    assert ragged.shape == padded.shape and len(ragged) == 9 and ragged.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(ragged), padded)
    for key in (4, slice(2, 6), np.array([8, 0, 3, 3]), mask.any(axis=1), (slice(1, 5), slice(None, 3))):
        np.testing.assert_array_equal(ragged[key], padded[key])
    np.testing.assert_array_equal(ragged[np.array([5, 1]), :4], padded[[5, 1], :4])


def test_values_that_do_not_fill_the_mask_are_an_error() -> None:
    mask = np.array([[True, True, False], [True, False, False]])
    with pytest.raises(TbprError, match="marks 3 positions, the values hold 2"):
        Ragged(np.zeros((2, 4), np.float16), mask)


def test_8bit_codes_read_back_within_half_a_step_of_each_row_and_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((5, 4, 3, 2)) * rng.uniform(0.1, 10, (5, 4, 1, 1))).astype(np.float32)
    values[2, 1] = 0.75  # a constant channel: read back exactly
    values[3] += 50.3  # far from zero: lo rounds down by up to float16's spacing there (1/32)
    codes, ranges = quantize(values)
    assert codes.dtype == np.uint8 and codes.shape == values.shape and ranges.shape == (5, 4, 2)
    np.save(tmp_path / "codes.npy", codes)
    packed = Quantized(np.load(tmp_path / "codes.npy", mmap_mode="r"), ranges)
    low = values.min(axis=(2, 3))
    span = values.max(axis=(2, 3)) - low + _ulp16(low)  # per row and channel, computed here
    error = np.abs(np.asarray(packed) - values).max(axis=(2, 3))
    assert ranges.dtype == np.float16 and (ranges[..., 0] <= low).all()
    assert (error <= span / 510 * (1 + 2**-10) + 1e-6).all()
    assert error[2, 1] == 0 and (error > 0).sum() > 10  # lossy, within its bound
    for rows in (3, slice(1, 4), np.array([4, 0, 4])):
        np.testing.assert_array_equal(packed[rows], np.asarray(packed)[rows])


def test_8bit_words_read_back_within_half_a_step_of_each_word_ragged(tmp_path: Path) -> None:
    """Word features (W, C) with one range per word, placed ragged: the padded array within each
    word's own (max - min) / 510, zeros where the mask is off."""
    rng = np.random.default_rng(2)
    padded, mask = _padded_and_mask(rng, rows=6, width=5, dim=8)
    words = real_positions(padded, mask).astype(np.float32) * rng.uniform(0.1, 5, (int(mask.sum()), 1))
    codes, ranges = quantize(words, 1)
    assert codes.shape == words.shape and ranges.shape == (len(words), 2)
    np.save(tmp_path / "codes.npy", codes)
    ragged = Ragged(Quantized(np.load(tmp_path / "codes.npy", mmap_mode="r"), ranges), mask)
    read = np.asarray(ragged)
    assert read.shape == padded.shape and ragged.dtype == np.float32 and not read[~mask].any()
    span = words.max(axis=1) - words.min(axis=1) + _ulp16(words.min(axis=1))  # per word, computed here
    error = np.abs(read[mask] - words).max(axis=1)
    assert (error <= span / 510 * (1 + 2**-10) + 1e-6).all() and error.max() > 0
    np.testing.assert_array_equal(ragged[np.array([5, 1]), :3], read[[5, 1], :3])


def test_codes_without_their_ranges_are_an_error() -> None:
    with pytest.raises(TbprError, match="uint8 codes"):
        Quantized(np.zeros((2, 3, 4), np.float16), np.zeros((2, 3, 2), np.float32))
    with pytest.raises(TbprError, match=r"got uint8 \(2, 3, 4\) and \(2, 4, 2\)"):
        Quantized(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 4, 2), np.float32))
    for ranges in (
        np.zeros((3, 2)),
        np.zeros((2, 3)),
        np.zeros((2, 3, 4, 5, 2)),
    ):  # other rows, no pair, too deep
        with pytest.raises(TbprError, match="uint8 codes"):
            Quantized(np.zeros((2, 3, 4), np.uint8), ranges)


def _ulp16(values: np.ndarray) -> np.ndarray:
    """float16's spacing at each value: how far rounding a range's lo down to float16 may move it."""
    return np.spacing(np.abs(values).astype(np.float16)).astype(np.float32)


def test_values_beyond_float16_cannot_be_quantized() -> None:
    for bad in (np.float32(7e4), np.float32(-7e4), np.float32(np.nan), np.float32(np.inf)):
        values = np.ones((2, 3, 4), np.float32)
        values[1, 2, 3] = bad
        with pytest.raises(TbprError, match="float16"):
            quantize(values)
    codes, ranges = quantize(np.full((1, 1, 4), 6e4, np.float32))  # the largest float16s still fit
    np.testing.assert_allclose(np.asarray(Quantized(codes, ranges)), 6e4, rtol=1e-3)
