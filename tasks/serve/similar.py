"""Search by example and near-duplicate hiding, over a `Gallery`:

- `by_image(gallery, data, ...)`: an uploaded image (jpg, png, webp or bmp; decoded with the embed's
  guards: size, bombs, damage) encoded by the gallery's model; its global embedding searches the index.
- `by_path(gallery, path, ...)`: "more like this": a gallery image's stored global embedding searches
  the index (the image itself left out).
- `hide_duplicates(gallery, hits, ...)`: of hits with the same file bytes (sha256, image folders) or a
  global-embedding cosine at or above DUPLICATE_COSINE, only the best ranked is kept.

Image-to-image ranking is the cosine of global embeddings (the pair scorers compare a text with an
image); results have the search's shape with `confidence`/`match` None (the open-set calibration is a
text one). Dimension letters: G gallery, D dim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tasks.embed.files import IMAGE_SUFFIXES, open_image
from tasks.embed.index import search
from tasks.serve.files import ServeError
from tasks.serve.gallery import Gallery, check_query
from tbpr_models import image_transform

MAX_UPLOAD = 16 * 1024 * 1024  # bytes of an uploaded image
DUPLICATE_COSINE = 0.98
SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/bmp": ".bmp"}


def by_image(
    gallery: Gallery, data: bytes, content_type: str, k: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The gallery images most like the uploaded one (ranks offset+1 to offset+k)."""
    check_query("image", k, offset)
    suffix = SUFFIXES.get(content_type.split(";")[0].strip().lower())
    if suffix is None:
        raise ServeError(
            f"upload an image as the request body with Content-Type one of {', '.join(SUFFIXES)} "
            f"({', '.join(IMAGE_SUFFIXES)} files); got {content_type or 'none'!r}",
            415,
        )
    image = open_image(f"upload{suffix}", data)
    if isinstance(image, str):
        raise ServeError(f"the uploaded image cannot be used: {image}", 400)
    model, device = gallery.searcher.model, gallery.searcher.device
    pixels = image_transform(model.config.image)(image).unsqueeze(0).to(device)  # (1, 3, H, W)
    with gallery.lock, torch.inference_mode():
        vector = model.encode_images(pixels).global_.float().cpu().numpy()  # (1, D)
    return _ranked(gallery, vector, k, offset, exclude=None)


def by_path(gallery: Gallery, path: str, k: int, offset: int = 0) -> list[dict[str, Any]]:
    """ "More like this": the gallery images most like the one at `path` (itself left out)."""
    check_query("image", k, offset)
    if path not in gallery.rows:
        raise ServeError(f"{path!r} is not an image of this gallery", 404)
    row = gallery.rows[path]
    vector = gallery.searcher.store.image_globals()[row : row + 1]  # (1, D)
    return _ranked(gallery, vector, k, offset, exclude=row)


def _ranked(
    gallery: Gallery, vector: np.ndarray, k: int, offset: int, exclude: int | None
) -> list[dict[str, Any]]:
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    want = offset + k + (exclude is not None)
    scores, ids = search(gallery.searcher.index, np.ascontiguousarray(vector, dtype=np.float32), want)
    found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i != exclude]
    paths = gallery.searcher.paths
    hits = [
        {"rank": rank, "path": str(paths[i]), "score": round(s, 6), "confidence": None, "match": None}
        for rank, (i, s) in enumerate(found, start=1)
    ]
    return hits[offset : offset + k]


def hide_duplicates(
    gallery: Gallery, hits: list[dict[str, Any]], cosine: float = DUPLICATE_COSINE
) -> list[dict[str, Any]]:
    """`hits` (best first) without those repeating an earlier kept one: the same file bytes, or a global
    embedding within `cosine` of it. Each kept hit's `hidden` counts the duplicates it stands for."""
    globals_ = gallery.searcher.store.image_globals()
    kept: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    hashes: dict[str, dict[str, Any]] = {}
    for hit in hits:
        row = gallery.rows[hit["path"]]
        vector = globals_[row] / max(float(np.linalg.norm(globals_[row])), 1e-12)  # (D,)
        digest = gallery.files.get(hit["path"], (0, ""))[1]
        twin = hashes.get(digest) if digest else None
        if twin is None:
            close = [i for i, v in enumerate(vectors) if float(v @ vector) >= cosine]
            twin = kept[close[0]] if close else None
        if twin is not None:
            twin["hidden"] = twin.get("hidden", 0) + 1
            continue
        kept.append({**hit, "hidden": 0})
        vectors.append(vector)
        if digest:
            hashes[digest] = kept[-1]
    return kept
