"""An EMB opened once for a web service: search with request limits, the gallery's images by path
(only files the EMB lists, read inside the folder by `tasks.serve.files`, or from DATA while its content
hash is still the embedded one), and heat maps of a query word over a result image.
Dimension letters: L words, N regions, D dim.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from matplotlib import colormaps
from PIL import Image

from tasks.core.errors import TbprError
from tasks.data.layout import CAPTIONS, IMAGES, MANIFEST
from tasks.embed.layout import EMBED_JSON, FILES, SOURCE_FOLDER, EmbedInfo
from tasks.report.plots import region_grid
from tasks.score.search import Searcher
from tasks.serve import open_set
from tasks.serve.files import ServeError, gone, read_inside
from tbpr_models import image_transform
from tbpr_models.variant import VariantHead

log = logging.getLogger(__name__)

# Request limits (a 400 beyond them): the text encoders read at most max_length tokens (16 to 77 here),
# so longer text only costs tokenizing; a 1,000-word / 10,000-character cap keeps that bounded.
MAX_WORDS = 1_000
MAX_CHARS = 10_000
MAX_K = 100
MAX_OFFSET = 900  # "load more" pages through the best MAX_OFFSET + MAX_K images
HEAT_HEIGHT = 256  # heat map PNGs are drawn at this height


def check_query(text: str, k: int | None = None, offset: int = 0) -> str:
    """`text` stripped, or TbprError (HTTP 400) for empty or over-long text, k out of [1, MAX_K] or
    offset out of [0, MAX_OFFSET]."""
    stripped = text.strip()
    if not stripped:
        raise TbprError("the query text is empty; describe the person, e.g. 'a man in a red jacket'")
    words = len(stripped.split())
    if words > MAX_WORDS or len(stripped) > MAX_CHARS:
        raise TbprError(
            f"the query text is too long ({words:,} words, {len(stripped):,} characters); the limit is "
            f"{MAX_WORDS:,} words and {MAX_CHARS:,} characters (the model reads only its first tokens)"
        )
    if k is not None and not 1 <= k <= MAX_K:
        raise TbprError(f"k must be between 1 and {MAX_K} (got {k})")
    if not 0 <= offset <= MAX_OFFSET:
        raise TbprError(f"offset must be between 0 and {MAX_OFFSET} (got {offset})")
    return stripped


class Gallery:
    """The service's state: one `Searcher` (model, index, store) and the gallery's paths."""

    def __init__(self, emb: Path, *, device: str | torch.device = "cpu", index: str = "flat") -> None:
        self.emb = Path(emb)
        self.embedded_at = (
            (self.emb / EMBED_JSON).stat().st_mtime if (self.emb / EMBED_JSON).is_file() else 0.0
        )
        self.searcher = Searcher(emb, index=index, device=device)
        self.info = self.searcher.store.info
        self.rows: dict[str, int] = {}
        for row, path in enumerate(self.searcher.paths):
            self.rows.setdefault(path, row)
        self.files: dict[str, tuple[int, str]] = {}  # folder EMB: path -> (size, sha256) as embedded
        if self.info.source == SOURCE_FOLDER:
            table = pq.read_table(self.emb / FILES, columns=["path", "size", "sha256"])
            self.files = dict(
                zip(
                    table.column("path").to_pylist(),
                    zip(table.column("size").to_pylist(), table.column("sha256").to_pylist(), strict=True),
                    strict=True,
                )
            )
        else:
            self._data = DataCheck(self.info)
            try:
                self._data.check()  # a split EMB of DATA re-prepared since is refused at once
            except ServeError as exc:
                if exc.status == 409:
                    raise
                log.warning("%s; search works, its images are answered 404", exc)  # DATA moved away
        self.open_set = open_set.read(Path(self.info.checkpoint))  # None: not calibrated
        self.attention = (
            type(self.searcher.model.head).word_region_attention is not VariantHead.word_region_attention
        )
        self.lock = threading.Lock()  # one request at a time uses the model

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.info.variant,
            "images": self.info.num_images,
            "attention": self.attention,
            "max_k": MAX_K,
            "max_words": MAX_WORDS,
            "max_chars": MAX_CHARS,
            "max_offset": MAX_OFFSET,
            "open_set": None
            if self.open_set is None
            else {
                "threshold": self.open_set.threshold,
                "false_alarm": self.open_set.false_alarm_target,
                "miss_rate": self.open_set.miss_rate,
            },
        }

    def search(self, text: str, k: int, offset: int = 0) -> list[dict[str, Any]]:
        """[{rank, path, score, confidence, match}] of ranks offset+1 to offset+k (within the gallery);
        confidence and match are None when the model has no open-set calibration (`open_set`)."""
        return self.search_page(text, k, offset)[0]

    def search_page(self, text: str, k: int, offset: int = 0) -> tuple[list[dict[str, Any]], str]:
        """(`search`'s hits, the verdict of the best one: "match", "no confident match" or
        "uncalibrated")."""
        check_query(text, k, offset)
        hits, verdict = self.ranked(text, offset + k)
        return hits[offset:], verdict

    def ranked(self, text: str, count: int) -> tuple[list[dict[str, Any]], str]:
        """The best `count` hits (at most MAX_OFFSET + MAX_K) and the verdict of the best one."""
        query = check_query(text)
        count = min(count, MAX_OFFSET + MAX_K)
        with self.lock:
            hits = self.searcher.search(query, top_k=count, candidates=max(64, count))
        calibrated = self.open_set
        page = [
            {
                "rank": h.rank,
                "path": h.file_path,
                "score": round(h.score, 6),
                "confidence": None if calibrated is None else round(calibrated.confidence(h.score), 4),
                "match": None if calibrated is None else calibrated.is_match(h.score),
            }
            for h in hits
        ]
        if calibrated is None:
            return page, "uncalibrated"
        return page, "match" if hits and calibrated.is_match(hits[0].score) else "no confident match"

    def image_bytes(self, path: str) -> tuple[bytes, str]:
        """(encoded bytes, MIME type) of a gallery image named by its path in the EMB; a ServeError for
        a path the EMB does not list (nothing else is ever read: 404), a file gone or no longer a regular
        file inside the folder (404), or bytes that changed since the embed (409)."""
        if path not in self.rows:
            raise ServeError(f"{path!r} is not an image of this gallery", 404)
        if self.info.source == SOURCE_FOLDER:
            size, sha256 = self.files[path]
            data = read_inside(self.info.image_folder, path, size, sha256)
        else:
            data = self._data.image(int(self.searcher.image_ids[self.rows[path]]), path)
        try:
            with Image.open(io.BytesIO(data)) as image:
                mime = Image.MIME.get(image.format or "", "application/octet-stream")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ServeError(f"{path!r} is no longer a readable image ({exc})", 409) from exc
        return data, mime

    def words(self, text: str) -> list[str]:
        """The query's words as the text encoder reads them (the tokens a heat map can be drawn for)."""
        tokens, _ = self._tokens(check_query(text))
        return [token for token in tokens if token]

    def _tokens(self, text: str) -> tuple[list[str], int]:
        """(token text per position, '' for special tokens and word pieces; the number of positions)."""
        tokenizer = self.searcher.tokenizer
        input_ids, mask = tokenizer([text])  # (1, L)
        length = max(int(mask.sum()), 1)
        special = set(tokenizer.backend.all_special_tokens)
        raw = tokenizer.backend.convert_ids_to_tokens(input_ids[0, :length].tolist())
        return ["" if t in special or t.startswith("##") else t.removesuffix("</w>") for t in raw], length

    def heatmap(self, text: str, path: str, word: str) -> bytes:
        """A PNG of the image at `path` under the attention of `word` (a word of `text`) over its regions."""
        query = check_query(text)
        if not self.attention:
            raise TbprError(f"the {self.info.variant} head has no word-to-region attention: no heat maps")
        tokens, _ = self._tokens(query)
        if word not in tokens:
            raise TbprError(
                f"{word!r} is not a word of the query as the model reads it: {[t for t in tokens if t]}"
            )
        data, _ = self.image_bytes(path)
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
        model = self.searcher.model
        pixels = (
            image_transform(model.config.image)(image).unsqueeze(0).to(self.searcher.device)
        )  # (1, 3, H, W)
        with self.lock, torch.inference_mode():
            texts = self.searcher.encode_text(query)
            images = model.encode_images(pixels).to(self.searcher.device, torch.float32)
            attention = model.head.word_region_attention(texts, images)  # (L, N)
        assert attention is not None  # self.attention: the head overrides it
        heat = attention[tokens.index(word)].float().cpu().numpy()  # (N,)
        return draw_heatmap(image, heat, (model.config.image.height, model.config.image.width))


class DataCheck:
    """The DATA folder of a split EMB, its content hash checked against the one embedded (`EmbedInfo.
    data_folder`) again whenever its files' status changes, so a DATA re-prepared while the service
    runs is refused (409) instead of serving other pixels under the old ranking."""

    def __init__(self, info: EmbedInfo) -> None:
        self.info = info
        self._seen: tuple[object, ...] | None = None
        self.lock = threading.Lock()

    def _stamp(self) -> tuple[object, ...]:
        folder = Path(self.info.data_dir)
        stamps: list[object] = []
        for name in (MANIFEST, IMAGES, CAPTIONS):
            try:
                st = os.stat(folder / name)
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def check(self) -> Path:
        """DATA's folder; a ServeError (409) when it changed since the embed, 404 when it is gone."""
        with self.lock:
            stamp = self._stamp()
            if stamp != self._seen:
                try:
                    folder = self.info.data_folder()
                except TbprError as exc:
                    raise ServeError(str(exc), 409) from exc
                if not (folder / IMAGES).is_file():
                    raise ServeError(
                        f"{folder / IMAGES} is gone; re-run `tbpr embed` on a prepared DATA", 404
                    )
                self._seen = stamp
            return Path(self.info.data_dir)

    def image(self, image_id: int, path: str) -> bytes:
        folder = self.check()
        try:
            table = pq.read_table(folder / IMAGES, columns=["image"], filters=[("image_id", "==", image_id)])
        except (OSError, ValueError) as exc:
            raise gone(path, f"DATA's images cannot be read ({exc})") from exc
        if table.num_rows == 0:
            raise gone(path, f"image {image_id} is no longer in {folder / IMAGES}")
        return bytes(table.column("image")[0].as_py())


def draw_heatmap(image: Image.Image, heat: np.ndarray, input_size: tuple[int, int]) -> bytes:
    """PNG bytes: `image` (scaled to HEAT_HEIGHT high) with `heat` (N,) over its region grid, in jet."""
    rows, cols = region_grid(len(heat), *input_size)
    grid = heat.reshape(rows, cols)  # (N,) -> (rows, cols)
    grid = (grid - grid.min()) / max(float(np.ptp(grid)), 1e-12)
    width = max(1, round(image.width * HEAT_HEIGHT / image.height))
    base = image.resize((width, HEAT_HEIGHT))
    smooth = Image.fromarray((grid * 255).astype(np.uint8)).resize(
        (width, HEAT_HEIGHT), Image.Resampling.BILINEAR
    )
    coloured = colormaps["jet"](np.asarray(smooth) / 255.0)[..., :3]  # (H, W, 3) in [0, 1]
    overlay = Image.fromarray((coloured * 255).astype(np.uint8))
    buffer = io.BytesIO()
    Image.blend(base, overlay, 0.45).save(buffer, format="PNG")
    return buffer.getvalue()
