"""Search by example ("more like this" on a gallery image, an uploaded image) ranked by the cosine of
global embeddings, and near-duplicate hiding, against independent numpy rankings."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tasks.serve.app import create_app
from tasks.serve.gallery import Gallery
from tests.embed.folder_images import GOOD, write_image_folder


@pytest.fixture(scope="module")
def gallery(tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    """A folder with one exact copy (cam2/copy.png of f.png), embedded with the tiny cross_scan model."""
    from tasks.embed.folder import embed_folder

    root = tmp_path_factory.mktemp("similar")
    images = write_image_folder(root / "images")
    shutil.copy(images / "f.png", images / "cam2/copy.png")
    return Gallery(embed_folder(images, tiny_checkpoint("cross_scan"), root / "emb", batch_size=4).out)


def _cosine_order(gallery: Gallery, vector: np.ndarray) -> list[tuple[str, float]]:
    globals_ = gallery.searcher.store.image_globals()
    unit = globals_ / np.linalg.norm(globals_, axis=1, keepdims=True)
    scores = unit @ (vector / np.linalg.norm(vector))
    order = np.argsort(-scores, kind="stable")
    return [(gallery.searcher.paths[i], float(scores[i])) for i in order]


def test_more_like_this_ranks_by_global_cosine(gallery: Gallery) -> None:
    client = TestClient(create_app(gallery))
    row = gallery.rows["cam1/b.png"]
    expected = [
        (p, s)
        for p, s in _cosine_order(gallery, gallery.searcher.store.image_globals()[row])
        if p != "cam1/b.png"
    ]
    hits = client.get("/api/similar", params={"path": "cam1/b.png", "k": 4}).json()
    # (f.png and its copy tie: their order is FAISS's)
    assert {h["path"] for h in hits} == {p for p, _ in expected[:4]}
    assert [h["score"] for h in hits] == [pytest.approx(s, abs=1e-4) for _, s in expected[:4]]
    more = client.get("/api/similar", params={"path": "cam1/b.png", "k": 4, "offset": 4}).json()
    assert {h["path"] for h in more} == {p for p, _ in expected[4:8]} and more[0]["rank"] == 5
    assert len(hits) + len(more) == len(GOOD)  # every other image once, itself never
    assert client.get("/api/similar", params={"path": "../x.png"}).status_code == 404


def test_an_uploaded_image_finds_itself_first(gallery: Gallery) -> None:
    client = TestClient(create_app(gallery))
    data = (Path(gallery.info.image_folder) / "cam2/e.JPEG").read_bytes()
    response = client.post(
        "/api/similar", params={"k": 3}, content=data, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    hits = response.json()
    assert hits[0]["path"] == "cam2/e.JPEG" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    row = gallery.rows["cam2/e.JPEG"]
    expected = _cosine_order(gallery, gallery.searcher.store.image_globals()[row])
    assert [h["score"] for h in hits] == [pytest.approx(s, abs=1e-4) for _, s in expected[:3]]
    for headers, body, status, message in (
        ({"content-type": "text/plain"}, data, 415, "Content-Type one of"),
        ({"content-type": "image/png"}, b"not an image", 400, "cannot be used: not an image"),
        ({"content-type": "image/png", "content-length": str(10**9)}, b"", 413, "the limit is"),
    ):
        bad = client.post("/api/similar", content=body, headers=headers)
        assert bad.status_code == status and message in bad.json()["error"]


def test_near_duplicates_are_hidden_when_asked(gallery: Gallery) -> None:
    import hashlib

    from tasks.serve.similar import DUPLICATE_COSINE

    client = TestClient(create_app(gallery))
    everything = client.get("/api/search", params={"q": "someone", "k": 10}).json()
    assert {"f.png", "cam2/copy.png"} <= {h["path"] for h in everything} and len(everything) == len(GOOD) + 1
    shown = client.get("/api/search", params={"q": "someone", "k": 10, "dedupe": "true"}).json()
    # independently: walk the ranking, keep a hit unless an earlier kept one has its bytes or is close
    folder, globals_ = Path(gallery.info.image_folder), gallery.searcher.store.image_globals()
    kept: list[str] = []
    for hit in everything:
        vector = globals_[gallery.rows[hit["path"]]]
        digest = hashlib.sha256((folder / hit["path"]).read_bytes()).hexdigest()
        if not any(
            hashlib.sha256((folder / k).read_bytes()).hexdigest() == digest
            or float(vector @ globals_[gallery.rows[k]])
            / float(np.linalg.norm(vector) * np.linalg.norm(globals_[gallery.rows[k]]))
            >= DUPLICATE_COSINE
            for k in kept
        ):
            kept.append(hit["path"])
    assert [h["path"] for h in shown] == kept
    assert len({"f.png", "cam2/copy.png"} & set(kept)) == 1  # the exact copy is always hidden
    assert sum(h["hidden"] for h in shown) == len(everything) - len(kept)
