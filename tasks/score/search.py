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
from tasks.embed.layout import GALLERY, SOURCE_FOLDER, EmbedInfo
from tasks.embed.store import EmbeddingStore
from tbpr_models import build_tokenizer
from tbpr_models.features import TextFeatures
from tbpr_models.metrics import rank_order

SHEET = "search.png"  # the contact sheet's default name, in the EMB folder


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    image_id: int
    person_id: int
    score: float  # the model's pair score
    file_path: str


class Searcher:
    """An EMB folder opened once for many queries (the CLI's one, the web service's many): its store,
    FAISS index, model and tokenizer, and the gallery's ids and paths."""

    def __init__(self, emb: Path, *, index: str = "flat", device: str | torch.device = "cpu") -> None:
        self.emb = Path(emb)
        self.store = EmbeddingStore(self.emb)
        self.index = self.store.index(check_index_kind(index))
        self.device = resolve_device(device)
        self.model = self.store.info.load_model(self.device)
        self.tokenizer = build_tokenizer(self.model.config.text)
        gallery = pq.read_table(self.emb / GALLERY, columns=["image_id", "person_id", "file_path"])
        self.image_ids, self.person_ids, self.paths = (
            gallery.column(c).to_pylist() for c in ("image_id", "person_id", "file_path")
        )

    @torch.inference_mode()
    def encode_text(self, text: str) -> TextFeatures:
        """The query's features (its real words only), on the searcher's device."""
        if not text.strip():
            raise TbprError("the query text is empty; describe the person, e.g. 'a man in a red jacket'")
        input_ids, mask = self.tokenizer([text])  # (1, L) each
        length = max(int(mask.sum()), 1)
        return self.model.encode_texts(
            input_ids[:, :length].to(self.device), mask[:, :length].to(self.device)
        ).to(self.device, torch.float32)

    @torch.inference_mode()
    def search(self, text: str, top_k: int = 10, candidates: int = 64) -> list[SearchHit]:
        """The `top_k` gallery images for `text`: the index's top `max(candidates, top_k)` by global
        cosine, re-ranked with `model.similarity` (ties by gallery order)."""
        if top_k < 1:
            raise TbprError(f"--top-k must be at least 1 (got {top_k})")
        texts = self.encode_text(text)
        query = texts.global_.float().cpu().numpy()  # (1, D)
        _, ids = search(self.index, query, max(candidates, top_k))  # (1, k)
        rows = np.sort(ids[0][ids[0] >= 0])  # (k,) gallery rows, in gallery order for tie-breaking
        images = self.store.images(rows, self.device, torch.float32)
        scores = self.model.similarity(texts, images)[0].float().cpu()  # (k,)
        order = rank_order(scores.reshape(1, -1))[0][0, :top_k]  # the tie rule: lower row first
        return [
            SearchHit(
                rank=rank,
                image_id=int(self.image_ids[rows[i]]),
                person_id=int(self.person_ids[rows[i]]),
                score=float(scores[i]),
                file_path=str(self.paths[rows[i]]),
            )
            for rank, i in enumerate(order, start=1)
        ]


def search_text(
    emb: Path,
    text: str,
    *,
    top_k: int = 10,
    candidates: int = 64,
    index: str = "flat",
    device: str | torch.device = "cpu",
) -> list[SearchHit]:
    """The `top_k` gallery images of `emb` for `text` (`Searcher.search`)."""
    if not text.strip():
        raise TbprError("the query text is empty; describe the person, e.g. 'a man in a red jacket'")
    if top_k < 1:
        raise TbprError(f"--top-k must be at least 1 (got {top_k})")
    return Searcher(emb, index=index, device=device).search(text, top_k, candidates)


def hit_images(emb: Path, hits: list[SearchHit]) -> dict[int, Image.Image]:
    """image_id -> RGB image of each hit: from the DATA folder of a split EMB, or from the image folder
    of a folder EMB."""
    info = EmbedInfo.read(emb)
    if info.source != SOURCE_FOLDER:
        return data_images(Path(info.data_dir), [hit.image_id for hit in hits])
    found = {}
    for hit in hits:
        with Image.open(Path(info.image_folder) / hit.file_path) as image:
            found[hit.image_id] = image.convert("RGB")
    return found


def data_images(data: Path, image_ids: list[int]) -> dict[int, Image.Image]:
    """image_id -> RGB image, read from DATA/images.parquet."""
    images_path = Path(data) / IMAGES
    if not images_path.is_file():
        raise TbprError(
            f"{images_path} not found (the DATA folder recorded in embed.json); cannot draw the sheet"
        )
    table = pq.read_table(images_path, columns=["image_id", "image"], filters=[("image_id", "in", image_ids)])
    return {
        int(i): decode_image(b)
        for i, b in zip(table.column("image_id").to_pylist(), table.column("image").to_pylist(), strict=True)
    }


def contact_sheet(
    hits: list[SearchHit],
    data: Path,
    out: Path,
    *,
    columns: int = 5,
    cell: tuple[int, int] = (96, 192),
    images: dict[int, Image.Image] | None = None,
) -> Path:
    """A PNG grid of the hits' images (`images`, else read from DATA/images.parquet) captioned with
    rank, id (or path, for an image folder's hits) and score."""
    found = images if images is not None else data_images(data, [hit.image_id for hit in hits])
    width, height = cell
    caption = 30
    rows = max(1, math.ceil(len(hits) / columns))
    sheet = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for position, hit in enumerate(hits):
        x, y = (position % columns) * width, (position // columns) * (height + caption)
        if hit.image_id in found:
            sheet.paste(found[hit.image_id].resize((width, height)), (x, y))
        label = f"id {hit.image_id}" if hit.person_id >= 0 else Path(hit.file_path).name[:12]
        draw.text((x + 3, y + height + 2), f"#{hit.rank} {label}", fill="black", font=font)
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
