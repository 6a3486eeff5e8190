"""Embed a user's image folder (no captions, no person ids) into an EMB folder, incrementally.

A re-embed into the same EMB with the same model (the same weights digest and settings), the same
precision and the same device type encodes only the files added or changed since (keyed by relative
path and content hash), copies the others' features from the previous EMB, drops removed files and
rebuilds the FAISS indexes over the result: the same rows and features as a fresh embed. Another
model, precision (fp32 / bf16 features differ by ~1e-3) or device type re-embeds everything, and
`FolderRecord.reembedded` says why (the decision: `tasks.embed.previous`). Each batch of new or
changed files is encoded by `tasks.embed.images`, the loop every embed uses. Layout: `tasks.embed.layout`.
Dimension letters: G gallery, N regions, D dim.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from rich.progress import Progress, TaskID

from tasks.core.device import resolve_device, resolve_precision
from tasks.core.errors import TbprError
from tasks.core.files import (
    remove_stale_temps,
    replace_dir,
    temp_path,
    write_json_atomic,
    write_parquet_atomic,
)
from tasks.core.outputs import check_out_folder
from tasks.core.packed import Quantized, RowsFile, check_stored_dtype, open_rows, ranges_path
from tasks.embed import layout
from tasks.embed.encode import EmbedSummary, embedding_column
from tasks.embed.files import MAX_PIXELS, FolderFile, open_image, read_file, scan_folder, unlisted_record
from tasks.embed.images import Batch, encode_images
from tasks.embed.index import build_index, check_index_kind, save_index
from tasks.embed.previous import FolderRecord, Previous, previous_emb
from tasks.tracking.models import open_checkpoint
from tbpr_models import image_transform
from tbpr_models.checkpoint import CONFIG_FILE, is_checkpoint, weights_digest

log = logging.getLogger(__name__)
COUNTS = ("added", "changed", "removed", "unchanged", "quarantined", "encoded")


def check_folder_out(folder: Path, out: Path, checkpoint: Path | None = None) -> None:
    """TbprError unless `folder` is a folder and `out` may hold its EMB (`check_out_folder`: not inside
    the folder, nor holding it, nor a folder of other files)."""
    if not Path(folder).is_dir():
        raise TbprError(f"no image folder at {folder}; pass a folder of jpg/png/webp/bmp files to --images")
    check_out_folder(
        out,
        command="embed",
        marker=layout.EMBED_JSON,
        inputs={"image folder": folder, "checkpoint": checkpoint},
    )


def embed_folder(
    folder: Path,
    checkpoint: Path,
    out: Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    indexes: Sequence[str] = ("flat", "hnsw", "ivf"),
    max_pixels: int = MAX_PIXELS,
    model_ref: str | None = None,
    train_run_id: str | None = None,
    local_dtype: str = "float16",
) -> EmbedSummary:
    """Embed every image under `folder` into `out` (embed.json last), reusing an earlier EMB in `out`
    of the same model for the files it already holds unchanged. `local_dtype`: the region features as
    float16 or as 8-bit codes (`embed_split`); unchanged files' codes are copied as they are."""
    folder, out = Path(folder), Path(out)
    kinds = [check_index_kind(kind) for kind in indexes]
    check_stored_dtype(local_dtype, "local_dtype")
    check_folder_out(folder, out, checkpoint)
    if not is_checkpoint(checkpoint):
        raise TbprError(
            f"no checkpoint at {checkpoint} (weights or config missing); pass a trained run or model"
        )
    start = time.perf_counter()
    digest = weights_digest(checkpoint)
    config = json.loads((Path(checkpoint) / CONFIG_FILE).read_text())
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)  # folder.json records what ran
    previous = previous_emb(out, digest, config, max_pixels, precision, torch_device.type, local_dtype)
    model = open_checkpoint(checkpoint, device=torch_device).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    work = temp_path(out)
    work.mkdir()
    try:
        kept, quarantine, fresh = _encode_changes(
            folder, previous, model, work, batch_size, torch_device, (precision, local_dtype), max_pixels
        )
        if not kept:
            reasons = "; ".join(f"{q.path}: {reason}" for q, reason in quarantine[:3])
            raise TbprError(
                f"no image under {folder} could be embedded ({len(quarantine)} quarantined"
                + (f": {reasons}" if reasons else "")
                + "); add jpg/png/webp/bmp files"
            )
        image_global = _assemble(kept, previous, fresh, work, local_dtype)
        files = sorted(kept)
        _write_tables(files, quarantine, image_global, work, local_dtype)
        for kind in kinds:
            save_index(build_index(image_global, kind), layout.index_file(work, kind))
        now = {f.path for f in files} | {q.path for q, _ in quarantine}
        hashes = {f.path: f.sha256 for f in files} | {q.path: q.sha256 for q, _ in quarantine}
        counts = {
            "added": len(now - previous.hashes.keys()),
            "changed": sum(p in previous.hashes and previous.hashes[p] != h for p, h in hashes.items()),
            "removed": len(previous.hashes.keys() - now),
            "unchanged": sum(previous.hashes.get(p) == h for p, h in hashes.items()),
            "quarantined": len(quarantine),
            "encoded": len(fresh.rows),
        }
        record = FolderRecord(
            str(folder.resolve()),
            digest,
            max_pixels,
            counts,
            previous.global_ is not None,
            precision=precision,
            device=torch_device.type,
            reembedded=previous.reembedded,
        )
        write_json_atomic(work / layout.FOLDER_JSON, dataclasses.asdict(record), indent=2, sort_keys=True)
        # whether the locals are unit is the head's property: as encoded now, or as the same model did
        unit = fresh.unit_local if fresh.rows else previous.unit_local
        refs = (model_ref, train_run_id)
        info = _info(folder, checkpoint, model, image_global, work, kinds, unit, refs, local_dtype)
        previous.local = None  # the old EMB's memory map is closed before it is replaced
        info.write(work)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    log.info("embedded %s into %s in %.1f s: %s", folder, out, seconds, counts)
    return EmbedSummary(
        out=out, info=info, seconds=seconds, stage_seconds={}, counts=counts, reembedded=previous.reembedded
    )


@dataclass
class _Fresh:
    """Features of the files this embed encodes: path -> row of `global_` and of the locals file."""

    rows: dict[str, int] = field(default_factory=dict)
    global_: np.ndarray | None = None  # (F, D), None when nothing was encoded
    unit_local: bool = True  # whether the encoded locals are unit (`ImageFeatures.unit_local`)

    @staticmethod
    def local_file(work: Path) -> Path:
        return work / "fresh_local.npy"  # (files to encode, N, D), stored as the EMB's locals are


def _encode_changes(
    folder: Path,
    previous: Previous,
    model: Any,
    work: Path,
    batch_size: int,
    device: torch.device,
    storage: tuple[str, str],
    max_pixels: int,
) -> tuple[dict[FolderFile, str], list[tuple[FolderFile, str]], _Fresh]:
    """Read and hash every file; encode those the previous EMB cannot give (in batches), in `storage`'s
    (precision, local dtype).
    Returns (embedded file -> where its features are: "previous" or "fresh"), quarantine, fresh features."""
    scan = scan_folder(folder)
    paths = scan.entries
    transform = image_transform(model.config.image)
    kept: dict[FolderFile, str] = {}
    quarantine = [(unlisted_record(folder, path), reason) for path, reason in scan.unlisted]
    fresh = _Fresh()

    def batches(progress: Progress, task: TaskID) -> Iterator[Batch]:
        """Pixels (B, 3, H, W) of the files to encode, `batch_size` at a time, as they are read."""
        batch: list[torch.Tensor] = []
        for record, image in _images(folder, paths, previous, max_pixels):
            progress.advance(task)
            if isinstance(image, str):
                quarantine.append((record, image))
            elif image is None:
                kept[record] = "previous"
            else:
                kept[record] = "fresh"
                fresh.rows[record.path] = len(fresh.rows)
                batch.append(transform(image))
                if len(batch) == batch_size:
                    yield torch.stack(batch), model.encode_images
                    batch = []
        if batch:
            yield torch.stack(batch), model.encode_images

    with Progress(transient=True) as progress:
        task = progress.add_task(f"reading {folder}", total=len(paths))
        encoded = encode_images(
            model,
            batches(progress, task),
            _Fresh.local_file(work),
            capacity=len(paths),  # at most every file is encoded
            device=device,
            precision=storage[0],
            dtype=storage[1],
        )
    if encoded.rows:
        fresh.global_, fresh.unit_local = encoded.global_, encoded.unit_local
    return kept, quarantine, fresh


def _images(
    folder: Path, paths: list[Path], previous: Previous, max_pixels: int
) -> Iterator[tuple[FolderFile, Any]]:
    """(record, RGB image | None when the previous EMB holds its features | quarantine reason)."""
    for path in paths:
        record, data = read_file(folder, path)
        if isinstance(data, str):
            yield record, data
        elif record.path in previous.rows and previous.hashes.get(record.path) == record.sha256:
            yield record, None
        else:
            yield record, open_image(record.path, data, max_pixels)


def _assemble(
    kept: dict[FolderFile, str], previous: Previous, fresh: _Fresh, work: Path, local_dtype: str
) -> np.ndarray:
    """Gallery globals (G, D) in path order, and EMB/image_local.npy (G, N, D) written from the
    previous EMB's rows and the fresh ones, as stored (`RowsFile.put`)."""
    fresh_global = fresh.global_  # (F, D)
    fresh_local = open_rows(_Fresh.local_file(work), local_dtype) if fresh.rows else None  # (F', N, D)
    # (globals, locals, row) of each gallery row
    sources: list[tuple[np.ndarray, np.ndarray | Quantized, int]] = []
    for record in sorted(kept):
        if kept[record] == "fresh":
            assert fresh_local is not None and fresh_global is not None
            sources.append((fresh_global, fresh_local, fresh.rows[record.path]))
        else:
            assert previous.local is not None and previous.global_ is not None
            sources.append((previous.global_, previous.local, previous.rows[record.path]))
    first_global, first_local, _ = sources[0]
    shape = (len(sources), *first_local.shape[1:])  # (G, N, D)
    local = RowsFile(work / layout.IMAGE_LOCAL, shape, local_dtype)
    image_global = np.empty((len(sources), first_global.shape[1]), np.float32)  # (G, D)
    for row, (globals_, locals_, source_row) in enumerate(sources):
        image_global[row] = globals_[source_row]
        local.put(row, locals_, source_row)
    local.flush()
    del local, fresh_local, sources
    _Fresh.local_file(work).unlink(missing_ok=True)
    ranges_path(_Fresh.local_file(work)).unlink(missing_ok=True)
    return image_global


def _write_tables(
    files: list[FolderFile],
    quarantine: list[tuple[FolderFile, str]],
    image_global: np.ndarray,
    work: Path,
    local_dtype: str,
) -> None:
    """gallery.parquet, files.parquet, quarantine.parquet, and the empty queries (Q = 0)."""
    dim = image_global.shape[1]
    gallery = pa.table(
        {
            "image_id": pa.array(range(len(files)), pa.int64()),
            "person_id": pa.array([-1] * len(files), pa.int64()),
            "file_path": pa.array([f.path for f in files], pa.string()),
            "embedding": embedding_column(image_global),
        }
    )
    write_parquet_atomic(gallery, work / layout.GALLERY)
    write_parquet_atomic(_file_table(files), work / layout.FILES)
    table = _file_table([q for q, _ in quarantine]).append_column(
        "reason", pa.array([reason for _, reason in quarantine], pa.string())
    )
    write_parquet_atomic(table, work / layout.FOLDER_QUARANTINE)
    queries = pa.table(
        {
            "caption_id": pa.array([], pa.int64()),
            "image_id": pa.array([], pa.int64()),
            "person_id": pa.array([], pa.int64()),
            "text": pa.array([], pa.string()),
            "embedding": embedding_column(np.empty((0, dim), np.float32)),
        }
    )
    write_parquet_atomic(queries, work / layout.QUERIES)
    RowsFile(
        work / layout.TEXT_LOCAL, (0, dim), local_dtype, ranged=1
    ).flush()  # W = 0: no captions, no words
    np.save(work / layout.TEXT_MASK, np.empty((0, 1), np.bool_))


def _file_table(files: list[FolderFile]) -> pa.Table:
    return pa.table(
        {
            "path": pa.array([f.path for f in files], pa.string()),
            "sha256": pa.array([f.sha256 for f in files], pa.string()),
            "size": pa.array([f.size for f in files], pa.int64()),
            "mtime_ns": pa.array([f.mtime_ns for f in files], pa.int64()),
        }
    )


def _info(
    folder: Path,
    checkpoint: Path,
    model: Any,
    image_global: np.ndarray,
    work: Path,
    kinds: list[Any],
    unit_local: bool,
    refs: tuple[str | None, str | None],
    local_dtype: str,
) -> layout.EmbedInfo:
    model_ref, train_run_id = refs
    local = np.load(work / layout.IMAGE_LOCAL, mmap_mode="r")
    regions = local.shape[1]
    del local
    return layout.EmbedInfo(
        model_ref=model_ref or str(checkpoint),
        checkpoint=str(Path(checkpoint).resolve()),
        image_folder=str(folder.resolve()),
        split="",
        variant=str(model.config.variant.kind),
        pairwise=bool(model.pairwise),
        num_images=len(image_global),
        num_queries=0,
        embed_dim=image_global.shape[1],
        num_regions=regions,
        max_length=1,
        indexes=tuple(kinds),
        image_local_unit=layout.unit_as_stored(unit_local, local_dtype),
        text_local_unit=False,
        local_dtype=local_dtype,
        embed_id=uuid.uuid4().hex,
        train_run_id=train_run_id,
        source=layout.SOURCE_FOLDER,
        config=json.loads((Path(checkpoint) / CONFIG_FILE).read_text()),
        weights_digest=weights_digest(Path(checkpoint)),
    )
