"""FAISS indexes over L2-normalised global embeddings: inner product = cosine.

Five kinds: `flat` (exact), `hnsw` (graph, sub-linear search), `ivf` (inverted lists, nlist ~
sqrt(G) capped, trained on the gallery itself), `ivfpq` (the same lists holding product-quantised
codes: D/8 bytes per image instead of 4 D, e.g. 32 instead of 1,024 bytes at D = 256, for galleries
whose vectors do not fit in memory) and `fastscan` (every image's 4-bit product-quantised code, D/8
bytes too, scanned with SIMD lookup tables: FAISS' `IndexPQFastScan`; at CUHK-PEDES scale the
cheapest first stage measured, 4x cheaper than `flat`: README "On trained models at CUHK-PEDES scale"). The last two give
approximate scores, so re-ranking matters more. `embed` builds flat, hnsw and ivf unless asked
(`--index ivfpq`, `--index fastscan`). Dimension letters: Q queries, G gallery, D dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import faiss
import numpy as np

from tasks.core.errors import TbprError
from tasks.core.files import atomic_path

IndexKind = Literal["flat", "hnsw", "ivf", "ivfpq", "fastscan"]
INDEX_KINDS: tuple[IndexKind, ...] = get_args(IndexKind)
DEFAULT_INDEXES: tuple[IndexKind, ...] = ("flat", "hnsw", "ivf")  # what `embed` builds unless asked
APPROXIMATE_SCORES: tuple[IndexKind, ...] = ("ivfpq", "fastscan")  # scores from codes, not the vectors


@dataclass(frozen=True)
class IndexParams:
    """Build and search settings. `ivf_nprobe=0` probes half of the lists (at least 8): recall first."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128  # raised to 2k at search time when k is larger
    ivf_nlist_cap: int = 1024
    ivf_min_points_per_list: int = 39  # FAISS warns below 39 training points per centroid
    ivf_nprobe: int = 0
    pq_bytes_per_dim: float = 1 / 8  # ivfpq: sub-quantisers per dimension (one byte each at 8 bits)
    fastscan_dims: int = 4  # fastscan: dimensions per 4-bit sub-quantiser (D/4 of them: D/8 bytes)


def check_index_kind(name: str) -> IndexKind:
    """`name` as an `IndexKind`, or a TbprError listing the kinds."""
    if name not in INDEX_KINDS:
        raise TbprError(f"unknown index {name!r}; use one of {', '.join(INDEX_KINDS)}")
    return cast(IndexKind, name)


def ivf_nlist(num_vectors: int, params: IndexParams = IndexParams()) -> int:
    """Number of IVF lists: ~sqrt(G), at most `ivf_nlist_cap`, enough training points per list."""
    by_points = num_vectors // params.ivf_min_points_per_list
    return max(1, min(round(math.sqrt(num_vectors)), by_points, params.ivf_nlist_cap))


def build_index(vectors: np.ndarray, kind: IndexKind, params: IndexParams = IndexParams()) -> faiss.Index:
    """An inner-product index of `vectors` (G, D) float32, with ids 0..G-1 in row order."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)  # (G, D)
    dim = data.shape[1]
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.hnsw_ef_construction
        index.hnsw.efSearch = params.hnsw_ef_search
    elif kind in ("ivf", "ivfpq"):
        nlist = ivf_nlist(len(data), params)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m, bits = pq_shape(len(data), dim, params)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, bits, faiss.METRIC_INNER_PRODUCT)
        index.train(data)
        index.nprobe = default_nprobe(nlist, params)
    elif kind == "fastscan":
        if len(data) < FASTSCAN_CENTROIDS:  # k-means needs a point per centroid: exact on tiny galleries
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexPQFastScan(dim, fastscan_m(dim, params), 4, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.min_points_per_centroid = 1  # small galleries train coarser codebooks, silently
            index.train(data)
    else:
        raise TbprError(f"unknown index {kind!r}; use one of {', '.join(INDEX_KINDS)}")
    index.add(data)
    return index


def pq_shape(num_vectors: int, dim: int, params: IndexParams = IndexParams()) -> tuple[int, int]:
    """(sub-quantisers m, bits each) of `ivfpq`: m divides D (about D/8); 8 bits once the gallery has
    the 39 training points per centroid FAISS asks for (2**bits centroids), fewer below."""
    m = max(1, round(dim * params.pq_bytes_per_dim))
    while dim % m:
        m -= 1
    bits = int(np.clip(math.floor(math.log2(max(num_vectors, 1) / params.ivf_min_points_per_list)), 1, 8))
    return m, bits


FASTSCAN_CENTROIDS = 16  # 4-bit codes: 16 centroids per sub-quantiser


def fastscan_m(dim: int, params: IndexParams = IndexParams()) -> int:
    """Sub-quantisers of `fastscan`: about D / `fastscan_dims`, a divisor of D."""
    m = max(1, dim // max(1, params.fastscan_dims))
    while dim % m:
        m -= 1
    return m


def default_nprobe(nlist: int, params: IndexParams = IndexParams()) -> int:
    if params.ivf_nprobe > 0:
        return min(nlist, params.ivf_nprobe)
    return min(nlist, max(8, nlist // 2))


def search(
    index: faiss.Index, queries: np.ndarray, k: int, params: IndexParams = IndexParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores (Q, k) float32, ids (Q, k) int64); ids are -1 where fewer than k were found."""
    k = min(k, index.ntotal)
    hnsw = _downcast(index)
    if isinstance(hnsw, faiss.IndexHNSW):
        hnsw.hnsw.efSearch = max(params.hnsw_ef_search, 2 * k)
    elif isinstance(hnsw, faiss.IndexIVF) and params.ivf_nprobe > 0:
        hnsw.nprobe = min(hnsw.nlist, params.ivf_nprobe)
    data = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
    scores, ids = index.search(data, k)
    return scores, ids


def _downcast(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index)


def save_index(index: faiss.Index, path: Path) -> Path:
    """Write `index` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def load_index(path: Path) -> faiss.Index:
    if not path.is_file():
        raise TbprError(f"no FAISS index at {path}; run `tbpr embed` with this index kind first")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise TbprError(
            f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); re-run `tbpr embed`"
        ) from exc
