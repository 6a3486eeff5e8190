"""The EMB folder against a direct encoding, search against exhaustive rankings, the contact sheet."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tasks.core.errors import TbprError
from tasks.embed.encode import embed_split
from tasks.embed.layout import EmbedInfo
from tasks.embed.store import EmbeddingStore
from tasks.score.run import score
from tasks.score.search import contact_sheet, search_text
from tbpr_models import ImageTransform, RetrievalModel, build_tokenizer, load_checkpoint
from tbpr_models.checkpoint import weights_digest

CPU = torch.device("cpu")


def read_tiny(model: RetrievalModel, data: Path) -> tuple[pa.Table, pa.Table, torch.Tensor]:
    """(images table, captions table, every image as the model's pixels (G, 3, H, W))."""
    images = pq.read_table(data / "images.parquet")
    captions = pq.read_table(data / "captions.parquet")
    transform = ImageTransform(model.config.image.height, model.config.image.width, train=False)
    pixels = torch.stack(
        [transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images["image"].to_pylist()]
    )
    return images, captions, pixels


def open_tiny_emb(
    emb: Path, data: Path
) -> tuple[EmbedInfo, RetrievalModel, pa.Table, pa.Table, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(info, model, images table, captions table, pixels, input ids, mask) of a tiny EMB and its DATA."""
    info = EmbedInfo.read(emb)
    model = load_checkpoint(Path(info.checkpoint))
    images, captions, pixels = read_tiny(model, data)
    ids, mask = build_tokenizer(model.config.text)(captions["text"].to_pylist())  # (Q, 16) each
    return info, model, images, captions, pixels, ids, mask


def test_embed_writes_what_the_model_computes(tiny_emb: Callable[[str], Path], tiny_data: Path) -> None:
    emb = tiny_emb("cross_scan")
    info, model, images, captions, pixels, ids, mask = open_tiny_emb(emb, tiny_data)
    with torch.inference_mode():
        image_feats, text_feats = model.encode_images(pixels), model.encode_texts(ids, mask)
    store = EmbeddingStore(emb)
    gallery = pq.read_table(emb / "gallery.parquet")
    assert gallery.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    assert gallery["image_id"].to_pylist() == images["image_id"].to_pylist()
    assert gallery["file_path"].to_pylist() == images["file_path"].to_pylist()
    assert pq.read_table(emb / "queries.parquet")["text"].to_pylist() == captions["text"].to_pylist()
    assert (info.num_images, info.num_queries, info.embed_dim, info.num_regions) == (16, 32, 16, 32)
    assert info.max_length == int(mask.sum(dim=1).max()) < 16  # trimmed to the longest caption
    np.testing.assert_allclose(store.image_globals(), image_feats.global_.numpy(), atol=1e-5)
    np.testing.assert_allclose(store.image_local, image_feats.local.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(store.text_globals(), text_feats.global_.numpy(), atol=1e-5)
    width = info.max_length
    np.testing.assert_array_equal(store.text_mask, mask[:, :width].bool().numpy())
    valid = store.text_mask[..., None]
    np.testing.assert_allclose(
        np.asarray(store.text_local) * valid, text_feats.local[:, :width].numpy() * valid, atol=2e-3
    )
    assert np.load(emb / "text_local.npy").shape == (int(mask.sum()), 16)  # the real words only, no padding
    assert store.image_local.dtype == np.float16 and isinstance(store.image_local, np.memmap)
    assert sorted(info.indexes) == ["flat", "hnsw", "ivf"] and (emb / "index_ivf.faiss").is_file()
    # cross_scan stores the raw tokens: not unit, so its pair scorer normalises them
    assert not (info.image_local_unit or info.text_local_unit)
    assert not (
        store.images(slice(None), CPU, torch.float32).unit_local
        or store.texts([0], CPU, torch.float32).unit_local
    )


def test_a_head_scoring_globals_stores_no_local_features(
    tiny_emb: Callable[[str], Path], tiny_data: Path
) -> None:
    """`spatial` scores the cosine of its globals: its EMB holds the globals, and zero regions and words."""
    emb = tiny_emb("spatial")
    info, model, _, _, pixels, ids, mask = open_tiny_emb(emb, tiny_data)
    with torch.inference_mode():
        image_feats, text_feats = model.encode_images(pixels), model.encode_texts(ids, mask)
    store = EmbeddingStore(emb)
    assert (info.num_regions, info.max_length) == (0, 0)
    assert store.image_local.shape == (16, 0, 16) and store.text_local.shape == (32, 0, 16)
    np.testing.assert_allclose(store.image_globals(), image_feats.global_.numpy(), atol=1e-5)
    np.testing.assert_allclose(store.text_globals(), text_feats.global_.numpy(), atol=1e-5)
    scores = model.similarity(
        store.texts(slice(None), CPU, torch.float32), store.images(slice(None), CPU, torch.float32)
    )
    expected = text_feats.global_ @ image_feats.global_.t()  # (Q, G) from the full features
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_embed_reports_the_seconds_of_its_stages(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """Images, captions and indexes are timed apart (the throughputs a gallery-size plan needs)."""
    summary = embed_split(
        tiny_data, tiny_checkpoint("global"), tmp_path / "emb", batch_size=8, indexes=("flat",)
    )
    stages = summary.stage_seconds
    assert set(stages) == {"images", "captions", "indexes"} and min(stages.values()) > 0
    assert sum(stages.values()) <= summary.seconds
    assert summary.images_per_second == pytest.approx(summary.info.num_images / stages["images"])
    assert summary.captions_per_second == pytest.approx(summary.info.num_queries / stages["captions"])


def test_hard_topk_emb_holds_its_selected_tokens_and_scores_the_same(
    tiny_emb: Callable[[str], Path], tiny_data: Path
) -> None:
    """hard_topk's pair score reads only its 8 selected regions and words: EMB keeps just those (4x fewer
    region tokens here), and exhaustive scoring of the EMB equals the model on the full features."""
    from tbpr_models import per_query_metrics

    emb = tiny_emb("hard_topk")
    info, model, images, captions, pixels, ids, mask = open_tiny_emb(emb, tiny_data)
    with torch.inference_mode():
        full = model.similarity(model.encode_texts(ids, mask), model.encode_images(pixels))  # (Q, G)
    store = EmbeddingStore(emb)
    assert store.image_local.shape[1] == 8 < model.num_regions  # 8 selected of 32 regions
    assert store.text_local.shape[1] == 8 == int(store.text_mask.sum(axis=1).max())
    # stored unit (embed.json says so, the store's features carry it): scoring does not normalise again
    assert info.image_local_unit and info.text_local_unit
    assert (
        store.images([1, 0], CPU, torch.float32).unit_local
        and store.texts(slice(2), CPU, torch.bfloat16).unit_local
    )
    norms = np.linalg.norm(store.image_local.astype(np.float32), axis=-1)
    assert np.abs(norms - 1).max() < 2e-3
    result = score(emb, emb.parent / "scored", mode="exhaustive", track=False)
    expected = per_query_metrics(full, captions["person_id"].to_numpy(), images["person_id"].to_numpy())
    assert result.metrics == pytest.approx(expected.metrics(), abs=1e-9)


def test_search_agrees_with_exhaustive_and_draws_a_sheet(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb("global")
    queries = pq.read_table(emb / "queries.parquet")
    text, caption_id = queries["text"][3].as_py(), queries["caption_id"][3].as_py()
    score(emb, tmp_path / "ex", mode="exhaustive", track=False)
    ranked = pq.read_table(tmp_path / "ex" / "rankings.parquet", filters=[("query_id", "=", caption_id)])
    expected = ranked.sort_by("rank").slice(0, 5)
    hits = search_text(emb, text, top_k=5, candidates=8, index="hnsw")
    assert [h.image_id for h in hits] == expected["image_id"].to_pylist()
    np.testing.assert_allclose([h.score for h in hits], expected["score"].to_numpy(), atol=1e-4)
    sheet = contact_sheet(hits, Path(EmbedInfo.read(emb).data_dir), tmp_path / "sheet.png", columns=3)
    with Image.open(sheet) as image:
        assert image.size == (3 * 96, 2 * (192 + 30))
        assert len(image.getcolors(maxcolors=1 << 20) or []) > 100  # the pedestrians were pasted


def test_a_retrained_checkpoint_is_refused_by_search_and_score(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """Queries encoded with new weights against a gallery encoded with the old rank nonsense silently:
    the EMB records its checkpoint's digest, and search and score refuse a checkpoint that changed."""
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("global"), checkpoint)
    emb = embed_split(tiny_data, checkpoint, tmp_path / "emb", batch_size=8, indexes=("flat",)).out
    recorded = EmbedInfo.read(emb).weights_digest
    assert recorded == weights_digest(checkpoint)
    assert search_text(emb, "a person in red", top_k=3, candidates=8, index="flat")  # unchanged: fine
    weights = load_file(str(checkpoint / "model.safetensors"))
    save_file(
        {name: tensor + 0.01 for name, tensor in weights.items()}, str(checkpoint / "model.safetensors")
    )
    now = weights_digest(checkpoint)
    for attempt in (
        lambda: search_text(emb, "a person in red", top_k=3, candidates=8, index="flat"),
        lambda: score(emb, tmp_path / "out", mode="exhaustive", track=False),
    ):
        with pytest.raises(TbprError, match="changed since it made these embeddings") as error:
            attempt()
        assert recorded[:19] in str(error.value) and now[:19] in str(error.value)
    assert not (tmp_path / "out").exists()


def test_data_re_prepared_since_the_embed_is_refused_where_its_images_are_drawn(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """Contact sheets and attention plots read the gallery's images from DATA by image id: DATA re-prepared
    at the same path would put other people's images beside these scores."""
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    emb = embed_split(data, tiny_checkpoint("global"), tmp_path / "emb", batch_size=8, indexes=("flat",)).out
    info = EmbedInfo.read(emb)
    assert info.data_folder() == data  # unchanged: fine
    images = pq.read_table(data / "images.parquet")
    flipped = images.set_column(images.schema.get_field_index("image"), "image", images["image"].take(list(range(images.num_rows))[::-1]))  # fmt: skip
    pq.write_table(flipped, data / "images.parquet")
    with pytest.raises(TbprError, match="changed since these embeddings were made") as error:
        info.data_folder()
    assert info.data_hash[:19] in str(error.value)
