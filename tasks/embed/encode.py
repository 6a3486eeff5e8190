"""Embed one split of DATA with a trained model: the EMB folder that scoring and search read.

Global embeddings go to Parquet with their ids, local features to memory-mappable float16 `.npy`
files, and FAISS indexes are built over the gallery globals (layout: `tasks.embed.layout`).
Captions are encoded in batches trimmed to their longest caption and stored padded to the longest
caption of the split (mask False), so L is the split's longest caption, at most `max_length`.
Dimension letters: Q queries, G gallery, N regions, L words, D dim.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader

from tasks.cache.features import CachedSplit, find_cache
from tasks.core.device import autocast, resolve_device, resolve_precision
from tasks.core.errors import TbprError
from tasks.core.files import remove_stale_temps, replace_dir, temp_path, write_parquet_atomic
from tasks.core.outputs import check_out_folder
from tasks.core.packed import Ragged, RowsFile, check_stored_dtype, quantize, ranges_path, real_positions
from tasks.core.shards import dask_client, gallery_shards
from tasks.data.check import content_hash
from tasks.data.layout import IMAGES
from tasks.data.reader import ImageDataset, SplitData, load_prepared
from tasks.embed import layout
from tasks.embed.images import Batch, encode_batches, encode_images
from tasks.embed.index import build_index, check_index_kind, save_index
from tasks.tracking.models import open_checkpoint
from tbpr_models import ImageFeatures, build_tokenizer, image_transform
from tbpr_models.checkpoint import CONFIG_FILE, is_checkpoint, weights_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSummary:
    """What `embed_split` wrote: the EMB folder, its `embed.json` record (counts, dims, indexes), the time,
    and the seconds of its stages (`images`: decoding and encoding the gallery, `captions`: tokenizing
    and encoding the queries, `indexes`: building the FAISS indexes)."""

    out: Path
    info: layout.EmbedInfo
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # an image folder's: `tasks.embed.folder.COUNTS`
    reembedded: str = ""  # an image folder's: why the previous EMB's features were not reused

    @property
    def images_per_second(self) -> float:
        return self.info.num_images / max(self.stage_seconds.get("images", 0.0), 1e-9)

    @property
    def captions_per_second(self) -> float:
        return self.info.num_queries / max(self.stage_seconds.get("captions", 0.0), 1e-9)


def embed_split(
    data: Path,
    checkpoint: Path,
    out: Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    indexes: Sequence[str] = ("flat", "hnsw", "ivf"),
    model_ref: str | None = None,
    train_run_id: str | None = None,
    shards: int = 1,
    scheduler: str | None = None,
    from_cache: bool = True,
    local_dtype: str = "float16",
) -> EmbedSummary:
    """Encode `split` of `data` with the checkpoint and write the EMB folder `out` (embed.json last).

    `shards` > 1 embeds the gallery in that many contiguous shards on Dask workers (a local cluster,
    or the one at `scheduler`), each writing its rows of image_local.npy; the EMB is the same.
    `from_cache`: when the feature cache of the model's frozen stages on DATA exists (the model was
    trained on it), only the stages above run, on its activations: the features the trainer evaluated,
    within float16 rounding of the activations, at the cost of the head instead of the encoders.
    `local_dtype`: the local features as float16, or as 8-bit codes with a range per region and per word
    ("uint8": half the size, each value within (max - min) / 510 of its vector's; `layout`)."""
    kinds = [check_index_kind(kind) for kind in indexes]
    check_stored_dtype(local_dtype, "local_dtype")
    out = Path(out)
    # the new EMB replaces `out` whole: refuse anything but an earlier EMB or an empty folder
    check_out_folder(
        out, command="embed", marker=layout.EMBED_JSON, inputs={"DATA folder": data, "checkpoint": checkpoint}
    )
    if not is_checkpoint(checkpoint):
        raise TbprError(
            f"no checkpoint at {checkpoint} (weights or config missing); pass a trained run or model"
        )
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)  # EMB settings record what ran
    start = time.perf_counter()
    prepared = load_prepared(data, splits=(split,))
    part = prepared.splits[split]
    digest = weights_digest(checkpoint)  # before loading: a retrain racing the load shows as a mismatch later
    model = open_checkpoint(checkpoint, device=torch_device).eval()
    config = model.config
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    # written beside `out` and swapped in when complete: an interrupted re-embed keeps the old EMB, and
    # files the new one does not build (an index kind no longer asked for) cannot outlive it
    work = temp_path(out)
    work.mkdir()
    stages: dict[str, float] = {}
    cache = find_cache(prepared, model, split) if from_cache else None
    if cache is not None:
        log.info("embedding %s from the feature cache %s (frozen stages not re-run)", split, cache.path.name)
    try:
        transform = image_transform(config.image)
        clock = time.perf_counter()
        if shards > 1 and cache is None:
            image_global, image_unit = _embed_images_sharded(
                model,
                data,
                split,
                checkpoint,
                work,
                batch_size,
                torch_device,
                precision,
                shards,
                scheduler,
                local_dtype,
            )
        else:
            if cache is not None:
                batches = _cached_images(model, cache.splits[split], cache.point.image, batch_size)
            else:
                loader = DataLoader(ImageDataset(part, transform), batch_size=batch_size)
                batches = ((pixels, model.encode_images) for pixels in loader)
            encoded = encode_images(
                model,
                batches,
                work / layout.IMAGE_LOCAL,
                capacity=len(part.image_ids),
                device=torch_device,
                precision=precision,
                progress="embedding images",
                dtype=local_dtype,
            )
            image_global, image_unit = encoded.global_, encoded.unit_local
        stages["images"], clock = time.perf_counter() - clock, time.perf_counter()
        input_ids, attention_mask = build_tokenizer(config.text)(part.texts)  # (Q, L) each
        hidden = None if cache is None else (cache.splits[split].texts, cache.point.text)
        text_global, text_unit = _embed_texts(
            model, input_ids, attention_mask, work, batch_size, torch_device, precision, hidden, local_dtype
        )
        stages["captions"] = time.perf_counter() - clock
        _write_gallery(data, part, image_global, work)
        _write_queries(part, text_global, work)
        clock = time.perf_counter()
        for kind in kinds:
            save_index(build_index(image_global, kind), layout.index_file(work, kind))
        stages["indexes"] = time.perf_counter() - clock
        image_local = np.load(work / layout.IMAGE_LOCAL, mmap_mode="r")
        text_mask = np.load(work / layout.TEXT_MASK, mmap_mode="r")
        info = layout.EmbedInfo(
            model_ref=model_ref or str(checkpoint),
            checkpoint=str(checkpoint.resolve()),
            data_dir=str(Path(data).resolve()),
            split=split,
            variant=str(config.variant.kind),
            pairwise=bool(model.pairwise),
            num_images=len(image_global),
            num_queries=len(text_global),
            embed_dim=image_global.shape[1],
            num_regions=image_local.shape[1],
            max_length=text_mask.shape[1],
            indexes=tuple(kinds),
            image_local_unit=layout.unit_as_stored(image_unit, local_dtype),
            text_local_unit=layout.unit_as_stored(text_unit, local_dtype),
            local_dtype=local_dtype,
            embed_id=uuid.uuid4().hex,
            train_run_id=train_run_id,
            dataset=prepared.dataset,
            config=json.loads((checkpoint / CONFIG_FILE).read_text()),
            weights_digest=digest,
            data_hash=content_hash(Path(data)),  # DATA's own Parquet bytes, as `data_folder` checks
        )
        del image_local, text_mask
        info.write(work)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    summary = EmbedSummary(out=out, info=info, seconds=seconds, stage_seconds=stages)
    log.info(
        "embedded %d images (%.0f/s) and %d captions (%.0f/s) into %s in %.1f s",
        info.num_images,
        summary.images_per_second,
        info.num_queries,
        summary.captions_per_second,
        out,
        seconds,
    )
    return summary


def _cached_images(model: Any, cached: CachedSplit, stage: int, batch_size: int) -> Iterator[Batch]:
    """Batches of cached activations (B, C, h, w), each with what encodes it: the stages above `stage`."""

    def encode(acts: torch.Tensor) -> ImageFeatures:
        return model.head.images(model.image_tokens(acts, stage))  # type: ignore[no-any-return]

    for start in range(0, len(cached.images), batch_size):
        yield torch.from_numpy(np.array(cached.images[start : start + batch_size])).float(), encode


def _embed_images_sharded(
    model: Any,
    data: Path,
    split: str,
    checkpoint: Path,
    out: Path,
    batch_size: int,
    device: torch.device,
    precision: str,
    shards: int,
    scheduler: str | None,
    local_dtype: str,
) -> tuple[np.ndarray, bool]:
    """Gallery globals (G, D) and whether the locals are unit; each shard's locals written by its worker
    into EMB/image_local.npy."""
    part = load_prepared(data, splits=(split,)).splits[split]
    total = len(part.image_ids)
    # the first image encoded once, for the shape of the locals file the workers write into
    pixels = image_transform(model.config.image)(_first_image(part)).unsqueeze(0)  # (1, 3, H, W)
    probe = next(encode_batches(model, [(pixels, model.encode_images)], device, precision))
    shape = (total, *probe.local.shape[1:])  # (G, N, D)
    RowsFile(out / layout.IMAGE_LOCAL, shape, local_dtype).flush()
    jobs = [(s.start, s.stop) for s in gallery_shards(total, shards)]
    with dask_client(len(jobs), scheduler) as client:
        futures = [
            client.submit(
                embed_image_rows,
                Path(data),
                split,
                str(checkpoint),
                out,
                a,
                b,
                batch_size,
                str(device),
                precision,
                local_dtype,
                pure=False,
            )
            for a, b in jobs
        ]
        parts = client.gather(futures)
    return np.concatenate(parts), probe.unit_local  # (G, D)


def _first_image(part: SplitData) -> Any:
    from tasks.data.reader import decode_image

    return decode_image(part.images[0].as_py())


@functools.lru_cache(maxsize=2)
def _worker_model(checkpoint: str, device: str) -> Any:
    return open_checkpoint(Path(checkpoint), device=torch.device(device)).eval()


def embed_image_rows(
    data: Path,
    split: str,
    checkpoint: str,
    out: Path,
    start: int,
    stop: int,
    batch_size: int,
    device: str,
    precision: str,
    local_dtype: str = "float16",
) -> np.ndarray:
    """On a worker: gallery rows [start, stop) encoded; locals written into the EMB's image_local.npy
    (created by the driver, as `local_dtype`), globals (S, D) returned."""
    model = _worker_model(checkpoint, device)
    part = load_prepared(data, splits=(split,)).splits[split]
    loader = DataLoader(
        torch.utils.data.Subset(ImageDataset(part, image_transform(model.config.image)), range(start, stop)),
        batch_size=batch_size,
    )
    return encode_images(
        model,
        ((pixels, model.encode_images) for pixels in loader),
        out / layout.IMAGE_LOCAL,
        capacity=stop,
        device=torch.device(device),
        precision=precision,
        start=start,
        create=False,
        dtype=local_dtype,
    ).global_  # (S, D)


@torch.inference_mode()
def _embed_texts(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    out: Path,
    batch_size: int,
    device: torch.device,
    precision: str,
    cached: tuple[np.ndarray | Ragged, int] | None = None,
    local_dtype: str = "float16",
) -> tuple[np.ndarray, bool]:
    """Caption globals (Q, D) float32 and whether the locals are unit (`TextFeatures.unit_local`); locals
    into text_mask.npy (Q, L) and text_local.npy (W, D) as `local_dtype` (float16, or 8-bit codes beside
    text_local_ranges.npy (W, 2)), the real words only (ragged, `layout`).
    With `cached` (the feature cache's (Q, L', C) hidden states, the stage they are the output of), only
    the stages above run."""
    lengths = attention_mask.sum(dim=1)  # (Q,)
    width = max(int(lengths.max()), 1)
    mask = np.lib.format.open_memmap(out / layout.TEXT_MASK, "w+", np.bool_, (len(input_ids), width))
    words, dim = 0, 0
    globals_: list[np.ndarray] = []
    used, unit = 0, True
    raw = out / f"{layout.TEXT_LOCAL}.raw"
    quantized = local_dtype == "uint8"
    raw_ranges = ranges_path(out / layout.TEXT_LOCAL).with_suffix(".raw")
    with (
        Progress(transient=True) as progress,
        raw.open("wb") as stream,
        raw_ranges.open("wb") if quantized else contextlib.nullcontext() as range_stream,
    ):
        task = progress.add_task("embedding captions", total=len(input_ids))
        for start in range(0, len(input_ids), batch_size):
            stop = min(start + batch_size, len(input_ids))
            length = max(int(lengths[start:stop].max()), 1)
            ids = input_ids[start:stop, :length].to(device)  # (B, L')
            valid = attention_mask[start:stop, :length].to(device)  # (B, L')
            with autocast(device, precision):
                if cached is None:
                    feats = model.head.compact_texts(model.encode_texts(ids, valid))
                else:
                    hidden = torch.from_numpy(np.array(cached[0][start:stop, :length])).float().to(device)
                    width_ = hidden.shape[1]  # the cache holds the split's longest caption
                    tokens = model.text_tokens(ids[:, :width_], valid[:, :width_], hidden, cached[1])
                    feats = model.head.compact_texts(model.head.texts(tokens, valid[:, :width_].bool()))
            unit &= feats.unit_local
            block = feats.local.float().cpu().numpy()  # (B, L'', D); L'' <= L' when the head compacts
            real = feats.mask.bool().cpu().numpy()  # (B, L'')
            used, dim = max(used, block.shape[1]), block.shape[2]
            mask[start:stop, : block.shape[1]] = real
            mask[start:stop, block.shape[1] :] = False
            kept = real_positions(block, real)  # (real words, D)
            if range_stream is not None:
                codes, ranges = quantize(kept, 1)  # a range per word
                stream.write(codes.tobytes())
                range_stream.write(ranges.tobytes())
            else:
                stream.write(kept.astype(np.float16).tobytes())
            words += len(kept)
            globals_.append(feats.global_.float().cpu().numpy())
            progress.advance(task, stop - start)
    mask.flush()
    _raw_to_npy(raw, out / layout.TEXT_LOCAL, np.dtype(np.uint8 if quantized else np.float16), (words, dim))
    if quantized:
        _raw_to_npy(raw_ranges, ranges_path(out / layout.TEXT_LOCAL), np.dtype(np.float16), (words, 2))
    if used < width:  # a compacting head (e.g. hard_topk's k selected words): keep only the used columns
        np.save(out / f"{layout.TEXT_MASK}.trim.npy", np.ascontiguousarray(mask[:, :used]))
        os.replace(out / f"{layout.TEXT_MASK}.trim.npy", out / layout.TEXT_MASK)
    return np.concatenate(globals_), unit  # (Q, D)


def _raw_to_npy(raw: Path, npy: Path, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """`raw`'s bytes (rows written as they came, their count known only at the end) as the `.npy` file
    `npy` of that dtype and shape; `raw` is removed."""
    with npy.open("wb") as out, raw.open("rb") as source:
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        )
        shutil.copyfileobj(source, out)
    raw.unlink()


def embedding_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))  # (rows * D,)
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def _write_gallery(data: Path, part: SplitData, image_global: np.ndarray, out: Path) -> None:
    table = pq.read_table(Path(data) / IMAGES, columns=["image_id", "file_path", "split"])
    table = table.filter(pc.equal(table["split"], part.name))
    path_of = dict(zip(table["image_id"].to_pylist(), table["file_path"].to_pylist(), strict=True))
    gallery = pa.table(
        {
            "image_id": pa.array(part.image_ids, pa.int64()),
            "person_id": pa.array(part.image_pids, pa.int64()),
            "file_path": pa.array([path_of[int(i)] for i in part.image_ids], pa.string()),
            "embedding": embedding_column(image_global),
        }
    )
    write_parquet_atomic(gallery, out / layout.GALLERY)


def _write_queries(part: SplitData, text_global: np.ndarray, out: Path) -> None:
    queries = pa.table(
        {
            "caption_id": pa.array(part.caption_ids, pa.int64()),
            "image_id": pa.array(part.image_ids[part.caption_image], pa.int64()),
            "person_id": pa.array(part.caption_pids, pa.int64()),
            "text": pa.array(part.texts, pa.string()),
            "embedding": embedding_column(text_global),
        }
    )
    write_parquet_atomic(queries, out / layout.QUERIES)
