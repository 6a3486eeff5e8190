"""8-bit local features in an EMB (`local_dtype = "uint8"`): each region and word within half a step of
the float16 EMB's, half its bytes, the same rankings but for near ties, sharded embedding writing the
same codes, and a damaged file refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.core.errors import TbprError
from tasks.embed import layout
from tasks.embed.encode import embed_split
from tasks.embed.store import EmbeddingStore
from tasks.score.layout import RANKINGS
from tasks.score.run import score

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def both(tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory):
    """(float16 EMB, uint8 EMB) of the same checkpoint and split."""
    root = tmp_path_factory.mktemp("local-dtype")
    checkpoint = tiny_checkpoint("cross_scan")
    for dtype in ("float16", "uint8"):
        embed_split(tiny_data, checkpoint, root / dtype, batch_size=5, indexes=("flat",), local_dtype=dtype)
    return root / "float16", root / "uint8"


def _within_half_a_step(approx: np.ndarray, exact: np.ndarray) -> None:
    """Every vector of `approx` (..., D) within (max - min + float16's spacing at min) / 510 of `exact`'s,
    the bound of its own range, computed here from the float16 values."""
    exact = exact.astype(np.float32)
    low = exact.min(axis=-1)
    span = exact.max(axis=-1) - low + np.spacing(np.abs(low).astype(np.float16)).astype(np.float32)
    error = np.abs(approx - exact).max(axis=-1)
    assert (error <= span / 510 * (1 + 2**-10) + 1e-3 * np.abs(exact).max(axis=-1)).all()
    assert error.max() > 0  # lossy


def test_8bit_locals_read_within_half_a_step_of_the_float16_ones_at_half_the_bytes(
    both: tuple[Path, Path],
) -> None:
    exact_emb, small_emb = both
    exact, small = EmbeddingStore(exact_emb), EmbeddingStore(small_emb)
    info = layout.EmbedInfo.read(small_emb)
    assert info.local_dtype == "uint8" and layout.EmbedInfo.read(exact_emb).local_dtype == "float16"
    assert not (info.image_local_unit or info.text_local_unit)  # 8-bit tokens are renormalised by scoring
    images = small.images(slice(None), CPU, torch.float32).local.numpy()
    _within_half_a_step(images, np.asarray(exact.image_local))
    mask = exact.text_mask
    words = small.texts(slice(None), CPU, torch.float32).local.numpy()
    _within_half_a_step(words[mask], np.asarray(exact.text_local)[mask])
    assert not words[~mask].any()
    # rows asked for as a list read what the whole array holds there
    rows = np.array([5, 0, 3])
    np.testing.assert_array_equal(small.images(rows, CPU, torch.float32).local.numpy(), images[rows])
    np.testing.assert_array_equal(small.texts(rows, CPU, torch.float32).local.numpy(), words[rows])
    for name in (layout.IMAGE_LOCAL, layout.TEXT_LOCAL):
        codes, values = np.load(small_emb / name), np.load(exact_emb / name)
        assert codes.dtype == np.uint8 and codes.shape == values.shape and values.dtype == np.float16
        ranges = np.load(small_emb / name.replace(".npy", "_ranges.npy"))
        assert ranges.shape == (*codes.shape[:-1], 2) and ranges.dtype == np.float16
        stored = codes.nbytes + ranges.nbytes
        assert stored <= values.nbytes * (0.5 + 2 / codes.shape[-1])  # half, plus 4 bytes per vector


def test_8bit_locals_rank_as_the_float16_ones(both: tuple[Path, Path], tmp_path: Path) -> None:
    """Exhaustive pairwise scores within 8-bit rounding: the scores of each query's ranked images agree to
    a few thousandths, so the top-1 differs only where the float16 EMB's top two nearly tie."""
    tables = {}
    for emb in both:
        score(emb, tmp_path / emb.name, mode="exhaustive", track=False)
        tables[emb.name] = pq.read_table(tmp_path / emb.name / RANKINGS).to_pandas()
    exact, small = tables["float16"], tables["uint8"]
    merged = exact.merge(small, on=["query_id", "image_id"], suffixes=("_exact", "_small"))
    assert len(merged) > 0.9 * len(exact)
    assert (merged["score_exact"] - merged["score_small"]).abs().max() < 5e-3
    first = {name: t[t["rank"] == 1].set_index("query_id")["image_id"] for name, t in tables.items()}
    differ = first["float16"] != first["uint8"].reindex(first["float16"].index)
    gaps = exact[exact["rank"] <= 2].pivot(index="query_id", columns="rank", values="score")
    assert ((gaps[1] - gaps[2])[differ[differ].index] < 1e-2).all()


@pytest.mark.slow
def test_sharded_embedding_writes_the_same_8bit_codes(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], both: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sharded"
    embed_split(
        tiny_data,
        tiny_checkpoint("cross_scan"),
        out,
        batch_size=5,
        indexes=("flat",),
        shards=3,
        local_dtype="uint8",
    )
    one = EmbeddingStore(both[1]).images(slice(None), CPU, torch.float32).local
    sharded = EmbeddingStore(out).images(slice(None), CPU, torch.float32).local
    # each region's range is its own: a shard quantizes its rows as the whole gallery would
    torch.testing.assert_close(sharded, one, atol=1e-5, rtol=1e-5)


def test_an_8bit_emb_without_its_ranges_is_refused(both: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    for name in ("image_local_ranges.npy", "text_local_ranges.npy"):
        emb = tmp_path / name
        shutil.copytree(both[1], emb)
        (emb / name).unlink()
        with pytest.raises(TbprError, match=f"{emb} is damaged.*re-run `tbpr embed`"):
            EmbeddingStore(emb)
    emb = tmp_path / "short"
    shutil.copytree(both[1], emb)
    np.save(emb / "image_local_ranges.npy", np.load(emb / "image_local_ranges.npy")[:-1])
    with pytest.raises(TbprError, match="uint8 codes"):
        EmbeddingStore(emb)


def test_an_unknown_local_dtype_is_an_error_before_anything_is_written(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    with pytest.raises(TbprError, match="local_dtype must be one of float16, uint8, not 'int4'"):
        embed_split(tiny_data, tiny_checkpoint("global"), tmp_path / "emb", local_dtype="int4")
    assert not (tmp_path / "emb").exists()


def test_an_image_folder_embeds_8bit_and_a_re_embed_copies_the_unchanged_codes(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """An image-folder EMB with 8-bit locals: a re-embed after one file changed copies the others'
    codes and ranges byte for byte (nothing re-quantized), equals a fresh 8-bit embed to 8-bit rounding,
    and storing float16 next time re-embeds everything and says why."""
    import shutil

    from tasks.embed.folder import embed_folder
    from tests.embed.folder_images import GOOD, save, write_image_folder

    images = write_image_folder(tmp_path / "images")
    checkpoint, out = tiny_checkpoint("cross_scan"), tmp_path / "emb"
    first = embed_folder(images, checkpoint, out, batch_size=4, local_dtype="uint8")
    assert first.info.local_dtype == "uint8" and not first.info.image_local_unit
    codes, ranges = np.load(out / layout.IMAGE_LOCAL), np.load(out / "image_local_ranges.npy")
    assert codes.dtype == np.uint8 and ranges.shape == (len(GOOD), codes.shape[1], 2)
    assert np.load(out / layout.TEXT_LOCAL).dtype == np.uint8  # no captions, stored alike
    changed = sorted(GOOD)[0]
    save(images, changed, "JPEG", (50, 100), "purple", seed=3)
    again = embed_folder(images, checkpoint, out, batch_size=4, local_dtype="uint8")
    assert (again.counts["changed"], again.counts["encoded"], again.counts["unchanged"]) == (
        1,
        1,
        len(GOOD) - 1 + 5,
    )
    rows = [i for i, path in enumerate(sorted(GOOD)) if path != changed]
    np.testing.assert_array_equal(np.load(out / layout.IMAGE_LOCAL)[rows], codes[rows])
    np.testing.assert_array_equal(np.load(out / "image_local_ranges.npy")[rows], ranges[rows])
    fresh = tmp_path / "fresh"
    embed_folder(images, checkpoint, fresh, batch_size=3, local_dtype="uint8")
    ours = EmbeddingStore(out).images(slice(None), CPU, torch.float32).local
    theirs = EmbeddingStore(fresh).images(slice(None), CPU, torch.float32).local
    step = torch.from_numpy(np.load(fresh / "image_local_ranges.npy")[..., 1].astype(np.float32))[..., None]
    assert (
        (ours - theirs).abs() <= step + 1e-4
    ).all()  # one code apart at most (batching moves the last bits)
    back = embed_folder(images, checkpoint, out, batch_size=4)
    assert back.counts["encoded"] == len(GOOD) and back.reembedded == "local_dtype uint8 -> float16"
    assert (
        np.load(out / layout.IMAGE_LOCAL).dtype == np.float16
        and not (out / "image_local_ranges.npy").exists()
    )
    shutil.rmtree(fresh)
