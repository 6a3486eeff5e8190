"""One free-text query against an EMB folder: FAISS candidates, re-ranked by the model's pair scorer,
and a contact sheet of the results. Dimension letters: G gallery, k candidates, L words, D dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw, ImageFont

from tasks.core.device import resolve_device
from tasks.core.errors import TbprError
from tasks.core.files import atomic_path
from tasks.data.layout import IMAGES
from tasks.data.reader import decode_image
from tasks.embed.index import check_index_kind, search
from tasks.embed.layout import GALLERY
from tasks.embed.store import EmbeddingStore
from tbpr_models import build_tokenizer

SHEET = "search.png"  # the contact sheet's default name, in the EMB folder


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    image_id: int
    person_id: int
    score: float  # the model's pair score
    file_path: str


@torch.inference_mode()
def search_text(
    emb: Path,
    text: str,
    *,
    top_k: int = 10,
    candidates: int = 64,
    index: str = "flat",
    device: str | torch.device = "cpu",
) -> list[SearchHit]:
    """The `top_k` gallery images for `text`: the index's top `max(candidates, top_k)` by global
    cosine, re-ranked with `model.similarity` (ties by gallery order)."""
    if not text.strip():
        raise TbprError("the query text is empty; describe the person, e.g. 'a man in a red jacket'")
    if top_k < 1:
        raise TbprError(f"--top-k must be at least 1 (got {top_k})")
    kind = check_index_kind(index)
    store = EmbeddingStore(emb)
    torch_device = resolve_device(device)
    model = store.info.load_model(torch_device)
    input_ids, mask = build_tokenizer(model.config.text)([text])  # (1, L) each
    length = max(int(mask.sum()), 1)
    texts = model.encode_texts(input_ids[:, :length].to(torch_device), mask[:, :length].to(torch_device))
    query = texts.global_.float().cpu().numpy()  # (1, D)
    _, ids = search(store.index(kind), query, max(candidates, top_k))  # (1, k)
    rows = np.sort(ids[0][ids[0] >= 0])  # (k,) gallery rows, in gallery order for tie-breaking
    images = store.images(rows, torch_device, torch.float32)
    scores = model.similarity(texts.to(torch_device, torch.float32), images)[0].float().cpu()  # (k,)
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k].numpy()
    gallery = pq.read_table(emb / GALLERY, columns=["image_id", "person_id", "file_path"])
    image_ids, pids, paths = (gallery.column(c).to_pylist() for c in ("image_id", "person_id", "file_path"))
    return [
        SearchHit(
            rank=rank,
            image_id=int(image_ids[rows[i]]),
            person_id=int(pids[rows[i]]),
            score=float(scores[i]),
            file_path=str(paths[rows[i]]),
        )
        for rank, i in enumerate(order, start=1)
    ]


def contact_sheet(
    hits: list[SearchHit], data: Path, out: Path, *, columns: int = 5, cell: tuple[int, int] = (96, 192)
) -> Path:
    """A PNG grid of the hits' images (read from DATA/images.parquet) captioned with rank, id, score."""
    images_path = Path(data) / IMAGES
    if not images_path.is_file():
        raise TbprError(
            f"{images_path} not found (the DATA folder recorded in embed.json); cannot draw the sheet"
        )
    wanted = [hit.image_id for hit in hits]
    table = pq.read_table(images_path, columns=["image_id", "image"], filters=[("image_id", "in", wanted)])
    data_of = dict(zip(table.column("image_id").to_pylist(), table.column("image").to_pylist(), strict=True))
    width, height = cell
    caption = 30
    rows = max(1, math.ceil(len(hits) / columns))
    sheet = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for position, hit in enumerate(hits):
        x, y = (position % columns) * width, (position // columns) * (height + caption)
        if hit.image_id in data_of:
            sheet.paste(decode_image(data_of[hit.image_id]).resize((width, height)), (x, y))
        draw.text((x + 3, y + height + 2), f"#{hit.rank} id {hit.image_id}", fill="black", font=font)
        draw.text((x + 3, y + height + 15), f"score {hit.score:.3f}", fill="black", font=font)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(out)) as tmp:
            sheet.save(tmp, format="PNG")
    except OSError as exc:
        raise TbprError(
            f"cannot write the contact sheet {out} ({exc}); pass a writable --sheet path"
        ) from exc
    return out
