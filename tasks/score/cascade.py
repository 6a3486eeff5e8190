"""Cascades across models: another model's EMB (e.g. `global`) proposes each query's candidates, the
scored EMB's model (or an external re-ranker) re-ranks them.

The two EMB folders must be embedded from the same DATA content (the data hash each embed.json
records) and describe the same queries (caption ids and texts) and the same gallery (image ids; rows
may be in another order, mapped by id). The first stage searches the candidates
EMB's FAISS index with its own query embeddings; candidate rows are mapped to the scored EMB's
gallery rows, and images outside the top k keep the candidates model's order below them.
Dimension letters: Q queries, G gallery, k candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from tasks.core.errors import TbprError
from tasks.embed.index import IndexParams
from tasks.embed.layout import GALLERY, QUERIES, EmbedInfo
from tasks.embed.store import EmbeddingStore
from tasks.score.pruned import Candidates, first_stage
from tasks.score.ranking import global_similarity


@dataclass(frozen=True)
class Alignment:
    """Rows of the candidates EMB in the scored EMB's order."""

    query_rows: np.ndarray  # (Q,) int64: the candidates EMB's row of each scored query
    gallery_rows: np.ndarray  # (G,) int64: the scored EMB's row of each candidates-EMB gallery row


def _column(emb: Path, file: str, column: str) -> list[object]:
    return pq.read_table(emb / file, columns=[column]).column(column).to_pylist()


def _rows_by_id(ids: list[object], others: list[object]) -> np.ndarray:
    """(len(ids),) the row of each id in `others` (both hold the same distinct ids)."""
    where = {value: row for row, value in enumerate(others)}
    return np.array([where[value] for value in ids], dtype=np.int64)


def align(emb: Path, candidates: Path) -> Alignment:
    """How the candidates EMB's rows map onto `emb`'s; a TbprError naming both folders when they were
    embedded from different DATA content (`EmbedInfo.check_same_data`), or their queries (caption ids
    and texts) or gallery images (image ids) differ."""
    EmbedInfo.read(emb).check_same_data(EmbedInfo.read(candidates), emb, candidates)
    fix = (
        "embed both models from the same DATA and split (`tbpr embed DATA --run RUN --out EMB`), "
        "or pass a --candidates-from folder of the same test split"
    )
    captions, other_captions = _column(emb, QUERIES, "caption_id"), _column(candidates, QUERIES, "caption_id")
    if len(set(captions)) != len(captions) or set(captions) != set(other_captions):
        raise TbprError(
            f"{emb} and {candidates} do not hold the same queries ({len(captions)} and "
            f"{len(other_captions)} caption ids, {len(set(captions) & set(other_captions))} shared); {fix}"
        )
    query_rows = _rows_by_id(captions, other_captions)
    texts, other_texts = _column(emb, QUERIES, "text"), _column(candidates, QUERIES, "text")
    differ = [captions[q] for q, row in enumerate(query_rows) if texts[q] != other_texts[row]]
    if differ:
        raise TbprError(
            f"{emb} and {candidates} hold different texts for {len(differ)} caption ids "
            f"(e.g. caption {differ[0]}); {fix}"
        )
    images, other_images = _column(emb, GALLERY, "image_id"), _column(candidates, GALLERY, "image_id")
    if len(set(images)) != len(images) or set(images) != set(other_images):
        raise TbprError(
            f"{emb} and {candidates} do not hold the same gallery ({len(images)} and "
            f"{len(other_images)} image ids, {len(set(images) & set(other_images))} shared); {fix}"
        )
    return Alignment(query_rows=query_rows, gallery_rows=_rows_by_id(other_images, images))


def propose(
    source: EmbeddingStore, alignment: Alignment, top_k: int, kind: str, index: faiss.Index | None = None
) -> Candidates:
    """Top-k candidates of every query from `source` (the candidates EMB's `kind` index, or `index`
    when it is loaded already), as rows of the scored EMB's gallery (-1 where the index found fewer)."""
    text_globals = source.text_globals()[alignment.query_rows]  # (Q, D') in the scored order
    found = first_stage(source.index(kind) if index is None else index, text_globals, top_k, IndexParams())
    ids = np.where(found.ids >= 0, alignment.gallery_rows[np.maximum(found.ids, 0)], -1)  # (Q, k)
    return Candidates(ids=ids, scores=found.scores)


def stage1_similarity(source: EmbeddingStore, alignment: Alignment) -> np.ndarray:
    """(Q, G) float32 the candidates model's global cosine in the scored EMB's rows: the order of the
    images outside the top k (evaluation only)."""
    image_globals = np.empty_like(source.image_globals())  # (G, D')
    image_globals[alignment.gallery_rows] = source.image_globals()
    return global_similarity(source.text_globals()[alignment.query_rows], image_globals)
