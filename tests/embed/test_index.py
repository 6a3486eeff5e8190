"""HNSW and IVF recall@k against the exact flat index on random unit vectors (the hard case for ANN:
no cluster structure). Floors measured with the default `IndexParams`, with a margin."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from tasks.core.errors import TbprError
from tasks.embed.index import (
    INDEX_KINDS,
    IndexKind,
    build_index,
    check_index_kind,
    fastscan_m,
    ivf_nlist,
    load_index,
    pq_shape,
    save_index,
    search,
)

FLOORS = {("hnsw", 10): 0.97, ("hnsw", 64): 0.95, ("ivf", 10): 0.75, ("ivf", 64): 0.70}


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return _unit(rng, 4000, 64), _unit(rng, 300, 64)


def test_flat_is_exact(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = vectors
    scores, ids = search(build_index(gallery, "flat"), queries, 10)
    exact = queries @ gallery.T  # (Q, G)
    np.testing.assert_array_equal(ids, np.argsort(-exact, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, axis=1), atol=1e-5)


@pytest.mark.parametrize(("kind", "k"), sorted(FLOORS))
def test_ann_recall_against_flat(
    kind: str, k: int, vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    gallery, queries = vectors
    _, exact = search(build_index(gallery, "flat"), queries, k)
    index = load_index(save_index(build_index(gallery, check_index_kind(kind)), tmp_path / "index.faiss"))
    _, found = search(index, queries, k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), exact.tolist(), strict=True)])
    assert recall >= FLOORS[(kind, k)], f"{kind} recall@{k} = {recall:.3f}"


def test_ivf_lists_follow_sqrt_of_gallery_capped() -> None:
    assert ivf_nlist(4000) == 63
    assert ivf_nlist(10**7) == 1024
    assert ivf_nlist(100) == 2  # at least 39 training points per list
    assert ivf_nlist(5) == 1


def test_unknown_index_kind_is_refused() -> None:
    assert INDEX_KINDS == ("flat", "hnsw", "ivf", "ivfpq", "fastscan")
    with pytest.raises(TbprError, match="unknown index"):
        check_index_kind("annoy")


def clustered(rng: np.random.Generator, persons: int, per_person: int, dim: int, noise: float) -> np.ndarray:
    """Unit vectors in clusters: `per_person` noisy views of each of `persons` random directions."""
    centres = rng.normal(size=(persons, 1, dim))
    views = centres + noise * rng.normal(size=(persons, per_person, dim))
    flat = views.reshape(-1, dim).astype(np.float32)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["ivfpq", "fastscan"])
def test_product_quantised_indexes_keep_recall_at_a_32nd_of_the_memory(kind: IndexKind) -> None:
    """IVF-PQ (8-bit codes) and fast-scan PQ (4-bit codes), both 32 bytes per 256-d vector, on 20,000
    clustered vectors (5,000 persons x 4 views): the exact top 4 of each query (its person's views:
    checked) are at least 95% within the index's top 10 (the recall floor), and the codes take 1/32
    of the float32 vectors."""
    rng = np.random.default_rng(0)
    gallery = clustered(rng, 5_000, 4, 256, 0.5)
    picked = rng.choice(len(gallery), 200, replace=False)
    queries = gallery[picked] + 0.02 * rng.normal(size=(200, 256))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    _, exact = search(build_index(gallery, "flat"), queries, 4)
    assert all(set(e) == set(range(p // 4 * 4, p // 4 * 4 + 4)) for e, p in zip(exact, picked, strict=True))
    index = build_index(gallery, kind)
    _, approximate = search(index, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(exact, approximate, strict=True)])
    assert recall >= 0.95, recall
    assert pq_shape(len(gallery), 256) == (32, 8) and fastscan_m(256) == 64
    codes = faiss.downcast_index(index).code_size * index.ntotal
    assert codes * 32 == gallery.nbytes


def test_fastscan_falls_back_to_exact_below_one_point_per_centroid() -> None:
    tiny = clustered(np.random.default_rng(2), 5, 3, 16, 0.3)  # 15 < 16 centroids
    exact = build_index(tiny, "fastscan")  # held: a downcast view does not own the index
    assert isinstance(faiss.downcast_index(exact), faiss.IndexFlatIP)
    small = clustered(np.random.default_rng(2), 10, 4, 12, 0.3)  # 40 points, D = 12: m = 3
    index = build_index(small, "fastscan")
    assert isinstance(faiss.downcast_index(index), faiss.IndexPQFastScan) and fastscan_m(12) == 3
    _, ids = search(index, small[:4], 4)
    assert index.ntotal == 40 and (ids >= 0).all()


def test_ivfpq_builds_on_tiny_galleries() -> None:
    gallery = clustered(np.random.default_rng(1), 8, 2, 16, 0.3)
    index = build_index(gallery, "ivfpq")
    assert index.ntotal == 16 and pq_shape(16, 16) == (2, 1)
    _, ids = search(index, gallery[:3], 5)
    assert (ids >= 0).all()
