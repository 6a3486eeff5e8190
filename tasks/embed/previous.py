"""What an image-folder re-embed may take from the EMB it replaces (`tasks.embed.folder`), and the
`folder.json` record that decides it.

The previous EMB's files are known by path and sha256 (so added, changed and removed files can be
counted); its features are reused only when they were made by the same model (weights digest and
settings), `max_pixels`, precision and device type, else `Previous.reembedded` says why not.
Dimension letters: G gallery, N regions, D dim.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.errors import TbprError
from tasks.core.packed import Quantized
from tasks.embed import layout
from tasks.embed.store import read_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderRecord:
    """`folder.json`: what the last embed of the folder did. The model is the same when its weights
    digest and its settings (embed.json's `config`, less the trainer's `extra`) are."""

    folder: str
    weights_digest: str
    max_pixels: int
    counts: dict[str, int]  # COUNTS: files added/changed/removed/unchanged since the previous EMB,
    # quarantined now, and encoded by this embed
    reused: bool  # features of unchanged files copied from the previous EMB (same model, precision, device)
    precision: str = ""  # what the features were encoded in ("" in an older folder.json: never reused)
    device: str = ""  # the device type that encoded them (cpu, cuda, mps)
    reembedded: str = ""  # why the previous EMB's features were not reused, when there was one


@dataclass
class Previous:
    """The EMB being replaced: path -> sha256 of its embedded and quarantined files, and, when its
    model is this one, the features of its embedded files to copy."""

    hashes: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # embedded path -> its row, when reusable
    global_: np.ndarray | None = None  # (G', D)
    local: np.ndarray | Quantized | None = None  # (G', N, D), memory-mapped (`layout.open_local`)
    unit_local: bool = False  # whether its locals are unit (embed.json's `image_local_unit`)
    reembedded: str = ""  # why an image-folder EMB's features were not reused


def model_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config.json without what its trainer added (`extra`: epoch, metrics)."""
    from tbpr_models.checkpoint import EXTRA_KEY

    return {key: value for key, value in config.items() if key != EXTRA_KEY}


def previous_emb(
    out: Path,
    digest: str,
    config: dict[str, Any],
    max_pixels: int,
    precision: str,
    device: str,
    local_dtype: str = "float16",
) -> Previous:
    try:
        info = layout.EmbedInfo.read(out)
        record = json.loads((out / layout.FOLDER_JSON).read_text())
        files = pq.read_table(out / layout.FILES).to_pylist()
        quarantined = pq.read_table(out / layout.FOLDER_QUARANTINE).to_pylist()
    except (TbprError, OSError, ValueError, pa.ArrowException):
        return Previous()  # none, or not an image-folder EMB: everything is new
    previous = Previous(hashes={row["path"]: row["sha256"] for row in files + quarantined})
    same_model = record.get("weights_digest") == digest and model_settings(info.config) == model_settings(
        config
    )
    was = (record.get("precision") or "unknown", record.get("device") or "unknown")
    differs = [
        why
        for why, differ in (
            ("not an image-folder EMB", info.source != layout.SOURCE_FOLDER),
            ("another model", not same_model),
            (
                f"max_pixels {record.get('max_pixels')} -> {max_pixels}",
                record.get("max_pixels") != max_pixels,
            ),
            (f"precision {was[0]} -> {precision}", was[0] != precision),
            (f"device {was[1]} -> {device}", was[1] != device),
            (f"local_dtype {info.local_dtype} -> {local_dtype}", info.local_dtype != local_dtype),
        )
        if differ
    ]
    if differs:
        previous.reembedded = "; ".join(differs)
        log.warning(
            "re-embedding every file of %s (%s): features are reused only when they match",
            out,
            previous.reembedded,
        )
    else:
        previous.rows = {row["path"]: i for i, row in enumerate(files)}
        previous.global_ = read_embeddings(out / layout.GALLERY)
        previous.local = layout.open_local(out, layout.IMAGE_LOCAL, info)
        previous.unit_local = info.image_local_unit
    return previous
