"""`generate`: the whole synthetic dataset, identities rendered in parallel processes.

Every identity has its own seeded generators (attributes, views, captions), so the output is
byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress, TaskID

from tasks.core.errors import TbprError
from tasks.core.version import __version__
from tasks.data.synth.attributes import identity_at, identity_rng
from tasks.data.synth.captions import captions_for, tokens
from tasks.data.synth.layout import (
    IMAGE_FOLDER,
    IMAGES,
    MARKER,
    ImageRecord,
    prepare_output,
    split_of_identities,
    write_annotations,
    write_synth_json,
)
from tasks.data.synth.scene import part_boxes, render_image
from tasks.data.synth.views import sample_views, visible_slots

log = logging.getLogger(__name__)
CHUNK = 25  # identities per worker task, at most
# zlib level 6 (PIL's default): on the main job's images 12.6% smaller than level 1 (and so DATA, whose
# Parquet holds the same bytes) for 10% more time re-encoding them; 9 gains 3% more at 2.8x the time.
PNG_LEVEL = 6


@dataclass(frozen=True)
class SplitCounts:
    identities: int
    images: int
    captions: int


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote, per split."""

    out: Path
    seed: int
    train: SplitCounts
    val: SplitCounts
    test: SplitCounts
    seconds: float = field(default=0.0, compare=False)

    @property
    def images(self) -> int:
        return self.train.images + self.val.images + self.test.images

    @property
    def identities(self) -> int:
        return self.train.identities + self.val.identities + self.test.identities


def render_identity(out: Path, seed: int, index: int, split: str) -> list[ImageRecord]:
    """Write the images of identity `index` under `out/imgs/` and return their records."""
    identity = identity_at(seed, index)
    views = sample_views(identity, identity_rng(seed, index, "views"))
    person_id = index + 1  # CUHK-PEDES ids start at 1
    records = []
    for k, view in enumerate(views):
        file_path = f"{IMAGE_FOLDER}/{person_id:05d}_{k}.png"
        image = render_image(identity, view)
        image.save(out / IMAGES / file_path, format="PNG", compress_level=PNG_LEVEL)
        texts = captions_for(identity, view, identity_rng(seed, index, f"captions-{k}"))
        conditions: dict[str, object] = {
            "viewpoint": view.viewpoint,
            "occluder": view.occluder,
            "visible": list(visible_slots(identity, view)),
        }
        if split == "test":  # where each part was drawn, to measure attention grounding (6 more renders)
            conditions["parts"] = part_boxes(identity, view, image)
        records.append(
            ImageRecord(
                person_id=person_id,
                file_path=file_path,
                split=split,
                captions=tuple(texts),
                tokens=tuple(tuple(tokens(t)) for t in texts),
                attributes={**identity.as_record(), **conditions},
            )
        )
    return records


def render_chunk(out: Path, seed: int, start: int, splits: list[str]) -> list[ImageRecord]:
    """Identities start .. start+len(splits)-1 (one worker task)."""
    return [r for i, split in enumerate(splits) for r in render_identity(out, seed, start + i, split)]


def _count(records: list[ImageRecord], split: str) -> SplitCounts:
    mine = [r for r in records if r.split == split]
    return SplitCounts(len({r.person_id for r in mine}), len(mine), sum(len(r.captions) for r in mine))


def _advance(progress: Progress, task: TaskID, count: int, _done: Future[list[ImageRecord]]) -> None:
    progress.advance(task, count)


def _render_all(
    out: Path, seed: int, splits: list[str], workers: int, progress: Progress
) -> list[ImageRecord]:
    task = progress.add_task("rendering identities", total=len(splits))
    chunk = max(1, min(CHUNK, -(-len(splits) // (4 * workers))))  # several tasks per worker
    starts = range(0, len(splits), chunk)
    if workers <= 1:
        records = []
        for start in starts:
            part = splits[start : start + chunk]
            records += render_chunk(out, seed, start, part)
            progress.advance(task, len(part))
        return records
    # spawn, not fork: callers (Prefect, tests) may have threads running
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures: list[Future[list[ImageRecord]]] = []
        for start in starts:
            part = splits[start : start + chunk]
            future = pool.submit(render_chunk, out, seed, start, part)
            future.add_done_callback(functools.partial(_advance, progress, task, len(part)))
            futures.append(future)
        return [r for future in futures for r in future.result()]


def generate(
    out: Path,
    identities: int = 1000,
    seed: int = 0,
    preview: Path | None = None,
    *,
    held_out: int | None = None,
    test: int | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> SynthSummary:
    """Write `identities` synthetic pedestrians with captions to `out` in the CUHK-PEDES layout.

    `workers`: rendering processes (default: 2 when there is enough work, at most the CPU count).
    `preview`: also write a contact sheet of 12 samples with their captions to this PNG.
    `held_out`: identities in each of val and test (default about 10% each); `test`: identities in
    test instead (default `held_out`).
    """
    began = time.perf_counter()
    out = Path(out)
    if workers is not None and workers < 1:
        raise TbprError(f"workers must be at least 1 (got {workers}); omit it for the default")
    splits = split_of_identities(identities, seed, held_out, test)
    prepare_output(out)
    write_synth_json(
        out / MARKER,
        {
            "generator": "tbpr synth",
            "identities": identities,
            "held_out": held_out,
            "test": test,
            "seed": seed,
            "version": __version__,
        },
    )
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if identities >= 4 * CHUNK else 1
    with Progress(disable=not show_progress, transient=True) as progress:
        records = _render_all(out, seed, splits, workers, progress)
    write_annotations(out, records)
    if preview is not None:
        from tasks.data.synth.preview import contact_sheet

        contact_sheet(out, records, Path(preview))
    summary = SynthSummary(
        out,
        seed,
        _count(records, "train"),
        _count(records, "val"),
        _count(records, "test"),
        time.perf_counter() - began,
    )
    log.info(
        "synth: %d identities, %d images in %.1f s -> %s",
        summary.identities,
        summary.images,
        summary.seconds,
        out,
    )
    return summary
