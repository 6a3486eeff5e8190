"""Re-ranking with an external cross-encoder from a local folder (`tbpr score EMB --mode pruned
--reranker DIR`): EMB's FAISS index proposes each query's top k, the re-ranker (`tbpr_models.rerankers`)
scores those pairs from the caption texts and the images themselves (EMB's DATA, its images.parquet).

Queries are taken in chunks sorted by their first candidate (captions of one image share candidates);
each chunk's union of candidate images is decoded once. Its cost counts like any pair scorer's:
seconds of decoding and scoring, and the pairs scored.
Dimension letters: Q queries, k candidates, U union of a chunk's candidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from rich.progress import Progress

from tasks.core.errors import TbprError
from tasks.data.layout import IMAGES
from tasks.data.reader import decode_image
from tasks.embed.layout import GALLERY, QUERIES, EmbedInfo
from tasks.score.pruned import Candidates, Reranked
from tbpr_models.rerankers import PairReranker, load_reranker


def open_reranker(folder: Path, device: torch.device) -> PairReranker:
    """The re-ranker of a local Hugging Face folder, or a TbprError that says what the folder lacks."""
    if not folder.is_dir():
        raise TbprError(f"--reranker {folder} is not a folder; pass a local `save_pretrained` model folder")
    try:
        return load_reranker(folder, device)
    except (ValueError, OSError, TypeError, KeyError, AttributeError) as exc:  # transformers on a bad config
        raise TbprError(f"--reranker {folder} cannot be loaded ({exc}); pass a BLIP ITM folder") from exc


def gallery_images(emb: Path, data: Path | None = None) -> list[bytes]:
    """The encoded bytes of every gallery image of `emb`, in its row order, from its DATA/images.parquet.
    The DATA folder is the one embed.json records (`data`, when given, must be it), checked by
    `EmbedInfo.data_folder`: a TbprError when DATA was re-prepared or edited since the embed."""
    info = EmbedInfo.read(emb)
    if data is not None and Path(data).resolve() != info.image_source.resolve():
        raise TbprError(
            f"{emb} was embedded from {info.image_source}, not {data}; the re-ranker reads that DATA"
        )
    data = info.data_folder()
    image_ids = pq.read_table(emb / GALLERY, columns=["image_id"]).column("image_id").to_pylist()
    path = data / IMAGES
    if not path.is_file():
        raise TbprError(
            f"{path} not found (the DATA folder recorded in {emb}/embed.json); the re-ranker reads the images"
        )
    table = pq.read_table(path, columns=["image_id", "image"], filters=[("image_id", "in", image_ids)])
    data_of = dict(zip(table.column("image_id").to_pylist(), table.column("image").to_pylist(), strict=True))
    missing = [i for i in image_ids if i not in data_of]
    if missing:
        raise TbprError(
            f"{path} lacks {len(missing)} gallery images of {emb} (e.g. {missing[0]}); embed it again"
        )
    return [data_of[i] for i in image_ids]


def query_texts(emb: Path) -> list[str]:
    return [str(t) for t in pq.read_table(emb / QUERIES, columns=["text"]).column("text").to_pylist()]


def rerank_external(
    reranker: PairReranker,
    texts: list[str],
    images: list[bytes],
    candidates: Candidates,
    *,
    chunk: int = 16,
    show_progress: bool = False,
) -> Reranked:
    """Scores of every query's candidates by `reranker`, `chunk` queries per call."""
    ids = candidates.ids
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)  # (Q, k)
    order = np.argsort(ids[:, 0], kind="stable")  # neighbours share candidates
    calls = 0
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("re-ranking (external)", total=len(ids))
        for start in range(0, len(ids), chunk):
            rows = np.sort(order[start : start + chunk])  # (c,)
            sub = ids[rows]  # (c, k)
            valid = sub >= 0
            union = np.unique(sub[valid])  # (U,)
            if union.size:
                query, column = np.nonzero(valid)  # the valid pairs of the chunk
                pairs = np.stack([query, np.searchsorted(union, sub[query, column])], axis=1)  # (P, 2)
                block = reranker.score_pairs(
                    [texts[r] for r in rows],
                    [decode_image(images[u]) for u in union],
                    torch.from_numpy(pairs),
                )  # (P,)
                scores[rows[query], column] = block.numpy()
                calls += 1
            progress.advance(task, len(rows))
    return Reranked(scores=scores, pairs_scored=int((ids >= 0).sum()), calls=calls)
