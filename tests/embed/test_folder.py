"""`embed_folder`: a user's image folder (no captions, no ids) embedded, bad files quarantined, re-embeds
incremental and equal to a fresh embed, another model re-embedding everything; search on it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.core.errors import TbprError
from tasks.embed import layout
from tasks.embed.files import open_image
from tasks.embed.folder import embed_folder
from tasks.embed.store import read_embeddings
from tasks.score.search import search_text
from tasks.tracking.models import open_checkpoint
from tbpr_models import image_transform
from tests.embed.folder_images import BAD, GOOD, person, save, write_image_folder

Checkpoint = Callable[[str], Path]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: the image folder of `folder_images`."""
    return write_image_folder(tmp_path_factory.mktemp("gallery") / "images")


@pytest.fixture(scope="module")
def emb(folder: Path, tiny_checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: `folder` embedded with the tiny cross_scan checkpoint."""
    out = tmp_path_factory.mktemp("folder-emb") / "emb"
    embed_folder(folder, tiny_checkpoint("cross_scan"), out, batch_size=4)
    return out


def test_good_files_embedded_bad_ones_quarantined_with_reasons(emb: Path, folder: Path) -> None:
    gallery = pq.read_table(emb / layout.GALLERY).to_pydict()
    assert gallery["file_path"] == sorted(GOOD)  # every image, nested, any size; in path order
    assert gallery["image_id"] == list(range(len(GOOD))) and set(gallery["person_id"]) == {-1}
    quarantine = {
        row["path"]: row["reason"] for row in pq.read_table(emb / layout.FOLDER_QUARANTINE).to_pylist()
    }
    assert quarantine.keys() == BAD.keys()  # the hidden folder is skipped, nothing else is lost
    for path, reason in BAD.items():
        assert quarantine[path].startswith(reason), (path, quarantine[path])
    files = pq.read_table(emb / layout.FILES).to_pylist()
    import hashlib

    assert [f["path"] for f in files] == sorted(GOOD)
    assert all(f["sha256"] == hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest() for f in files)
    info = layout.EmbedInfo.read(emb)
    assert (info.source, info.num_images, info.num_queries) == ("folder", len(GOOD), 0)


def test_embeddings_are_the_models_own(emb: Path, folder: Path, tiny_checkpoint: Checkpoint) -> None:
    """Each row equals the model applied to that file alone (an independent encoding)."""
    model = open_checkpoint(tiny_checkpoint("cross_scan")).eval()
    transform = image_transform(model.config.image)
    paths = pq.read_table(emb / layout.GALLERY, columns=["file_path"]).column(0).to_pylist()
    pixels = torch.stack([transform(open_image(p, (folder / p).read_bytes())) for p in paths])  # type: ignore[arg-type]
    with torch.inference_mode():
        feats = model.head.compact_images(model.encode_images(pixels))
    np.testing.assert_allclose(read_embeddings(emb / layout.GALLERY), feats.global_.numpy(), atol=1e-5)
    local = np.load(emb / layout.IMAGE_LOCAL)
    np.testing.assert_allclose(local, feats.local.numpy().astype(np.float16), atol=2e-3)


def test_decompression_bomb_limit_is_a_parameter() -> None:
    image = person((100, 200), "red")
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert not isinstance(open_image("x.png", buffer.getvalue()), str)
    reason = open_image("x.png", buffer.getvalue(), max_pixels=10_000)
    assert isinstance(reason, str) and reason.startswith("decompression bomb (100 x 200 = 20,000 pixels")


def test_incremental_reembed_encodes_only_changes_and_equals_a_fresh_embed(
    folder: Path, emb: Path, tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    images, out = tmp_path / "images", tmp_path / "emb"
    shutil.copytree(folder, images)
    shutil.copytree(emb, out)
    save(images, "cam3/new.webp", "WEBP", (70, 140), "purple")  # added
    save(images, "cam1/a.jpg", "JPEG", (40, 90), "orange", seed=7)  # changed
    (images / "cam2/d.bmp").unlink()  # removed
    (images / "bad/empty.png").write_bytes((images / "f.png").read_bytes())  # a quarantined file fixed
    summary = embed_folder(images, tiny_checkpoint("cross_scan"), out, batch_size=4)
    assert summary.counts == {
        "added": 1, "changed": 2, "removed": 1, "unchanged": 8, "quarantined": 4, "encoded": 3,
    }  # fmt: skip
    fresh = embed_folder(images, tiny_checkpoint("cross_scan"), tmp_path / "fresh", batch_size=3)
    assert fresh.counts["encoded"] == 7
    for name in (layout.FILES, layout.FOLDER_QUARANTINE):
        assert (
            pq.read_table(out / name)
            .drop_columns(["mtime_ns"])
            .equals(pq.read_table(tmp_path / "fresh" / name).drop_columns(["mtime_ns"]))
        )
    assert pq.read_table(out / layout.GALLERY, columns=["image_id", "file_path"]).equals(
        pq.read_table(tmp_path / "fresh" / layout.GALLERY, columns=["image_id", "file_path"])
    )
    np.testing.assert_allclose(
        read_embeddings(out / layout.GALLERY), read_embeddings(tmp_path / "fresh" / layout.GALLERY), atol=1e-5
    )
    np.testing.assert_allclose(
        np.load(out / layout.IMAGE_LOCAL), np.load(tmp_path / "fresh" / layout.IMAGE_LOCAL), atol=2e-3
    )
    # another model: nothing reused
    other = embed_folder(images, tiny_checkpoint("global"), out, batch_size=4)
    assert other.counts["encoded"] == 7 and other.counts["unchanged"] == 11


def test_out_inside_the_folder_or_a_folder_of_only_bad_files_is_refused(
    folder: Path, tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    with pytest.raises(TbprError, match="overlaps the image folder"):
        embed_folder(folder, tiny_checkpoint("cross_scan"), folder / "emb")
    assert not (folder / "emb").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("no")
    with pytest.raises(
        TbprError, match=r"no image under .* could be embedded \(1 quarantined: x.jpg: not an image"
    ):
        embed_folder(tmp_path / "bad", tiny_checkpoint("cross_scan"), tmp_path / "emb")
    assert not (tmp_path / "emb").exists()


def test_search_on_a_folder_emb_returns_paths(emb: Path) -> None:
    hits = search_text(emb, "a person in a red coat", top_k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert {h.file_path for h in hits} <= set(GOOD)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
