"""`manifest.json`: what was prepared from what, and the content hash that makes a re-run a no-op.

The content hash covers the annotation file's bytes and, for every record that passes the field and
path rules (in annotation order), its file path and the bytes of its image file. A re-run whose hash,
format, source path, dataset name and tbpr version match the manifest, with the outputs still in
place, writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.version import __version__
from tasks.data.layout import MANIFEST, OUTPUTS

HASH_DOMAIN = b"tbpr-prepare/1\0"


@dataclass(frozen=True)
class SplitCounts:
    """One row of the table the literature prints for a dataset split."""

    identities: int
    images: int
    captions: int


class ContentHash:
    """Incremental content hash: the annotation bytes, then (file path, image digest) in record order."""

    def __init__(self, annotation: bytes) -> None:
        self._hash = hashlib.sha256(HASH_DOMAIN)
        self._hash.update(hashlib.sha256(annotation).digest())

    def add(self, file_path: str, digest: bytes) -> None:
        self._hash.update(file_path.encode("utf-8") + b"\0" + digest)

    def add_all(self, items: Iterable[tuple[str, bytes]]) -> ContentHash:
        for file_path, digest in items:
            self.add(file_path, digest)
        return self

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def manifest_identity(
    *, dataset: str, fmt: str, source: Path, annotation: Path, content_hash: str
) -> dict[str, Any]:
    """The manifest fields that say what the outputs were made from: equal on a no-op re-run."""
    return {
        "dataset": dataset,
        "source": {"format": fmt, "path": str(source), "annotation": annotation.name},
        "content_hash": content_hash,
        "tbpr_version": __version__,
    }


def build_manifest(
    identity: dict[str, Any],
    *,
    records: int,
    splits: dict[str, SplitCounts],
    quarantine: dict[str, int],
    outputs: dict[str, int],
    quality: dict[str, Any],
) -> dict[str, Any]:
    """The full manifest: identity, counts per split, quarantine counts by reason, output sizes, and the
    data-quality report (`tasks.data.quality`: flags with counts and examples; nothing dropped)."""
    return {
        **identity,
        "records": records,
        "splits": {name: asdict(counts) for name, counts in splits.items()},
        "quarantine": dict(sorted(quarantine.items())),
        "outputs": outputs,
        "quality": quality,
    }


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest in `out`, or None if there is none or it is unreadable."""
    try:
        payload = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def output_sizes(paths: dict[str, Path]) -> dict[str, int]:
    """Byte size of each output file, keyed by its final name."""
    return {name: path.stat().st_size for name, path in paths.items()}


def is_up_to_date(manifest: dict[str, Any], out: Path, identity: dict[str, Any]) -> bool:
    """True if `manifest` has this `identity` (same inputs) and every output is still in place."""
    if any(manifest.get(key) != value for key, value in identity.items()):
        return False
    sizes = manifest.get("outputs")
    if not isinstance(sizes, dict) or set(sizes) != set(OUTPUTS):
        return False
    return all((out / name).is_file() and (out / name).stat().st_size == sizes[name] for name in OUTPUTS)
