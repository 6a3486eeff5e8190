"""The gallery a running service answers from, swapped when the EMB folder is re-embedded in place.

`tbpr embed` (and `--images`, and the `refresh-gallery` deployment) write a new EMB beside the old one
and rename it into place (`tasks.core.files.replace_dir`), with a new `embed_id` in `embed.json`. A
watcher thread reads that id every `check_every` seconds; when it changed, it opens the new folder as a
whole new `Gallery` (model, index, paths) and swaps one reference. A request takes that reference once
and answers from it to the end, so every answer comes from one gallery, old or new, never a mix.

A new folder is kept only when its `embed_id` was the same before and after it was opened (no second
re-embed replaced it meanwhile); one that cannot be opened (damaged, a checkpoint that changed) keeps the
old gallery serving and is logged and reported by `/healthz`, and tried again at the next change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tasks.core.errors import TbprError
from tasks.embed.layout import EMBED_JSON
from tasks.serve.gallery import Gallery

log = logging.getLogger(__name__)


def embed_id(emb: Path) -> str | None:
    """The `embed_id` in EMB's embed.json now, or None while there is none (mid-rename, or damaged)."""
    try:
        raw = json.loads((emb / EMBED_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    value = raw.get("embed_id") or ""  # an older embed.json has none: "" (never swapped)
    return value if isinstance(value, str) else None


class LiveGallery:
    """The current `Gallery` of an EMB folder, replaced when the folder is re-embedded."""

    def __init__(
        self,
        opener: Callable[[], Gallery],
        emb: Path,
        *,
        check_every: float | None = 2.0,
        gallery: Gallery | None = None,
    ) -> None:
        self.emb, self._opener, self.check_every = Path(emb), opener, check_every
        self.current = gallery if gallery is not None else self._open_stable()
        self.reloads = 0
        self.last_error: str | None = None
        self._failed: str | None = None  # the embed_id that could not be opened (not retried)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def fixed(cls, gallery: Gallery) -> LiveGallery:
        """A gallery that is never reloaded (tests, embedding callers)."""
        return cls(lambda: gallery, gallery.emb, check_every=None, gallery=gallery)

    def _open_stable(self) -> Gallery:
        """A Gallery of the folder as one embed wrote it (opened again if it was replaced meanwhile)."""
        for _ in range(5):
            before = embed_id(self.emb)
            gallery = self._opener()
            if before == embed_id(self.emb) == gallery.info.embed_id:
                return gallery
        raise TbprError(f"{self.emb} was replaced five times while it was being opened; try again")

    def start(self) -> None:
        """Watch the folder in a daemon thread (nothing when check_every is None)."""
        if self.check_every is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="gallery-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        assert self.check_every is not None
        while not self._stop.wait(self.check_every):
            self.check()

    def check(self) -> bool:
        """Swap to the folder's new embedding if there is one; whether it swapped."""
        now = embed_id(self.emb)
        if now is None or now == self.current.info.embed_id or now == self._failed:
            return False
        try:
            gallery = self._open_stable()
        except (TbprError, OSError, ValueError) as exc:
            self._failed, self.last_error = now, f"{self.emb} (embed {now[:8]}) cannot be served: {exc}"
            log.warning("%s; still serving embed %s", self.last_error, self.current.info.embed_id[:8])
            return False
        self.current, self.last_error, self._failed = gallery, None, None  # one reference: atomic
        self.reloads += 1
        log.info("now serving %s: embed %s, %d images", self.emb, now[:8], gallery.info.num_images)
        return True

    def age_seconds(self) -> float:
        """Seconds since the served embedding was written."""
        return max(0.0, time.time() - self.current.embedded_at)
