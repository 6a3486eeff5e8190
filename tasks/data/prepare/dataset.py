"""`prepare_dataset`: a public dataset layout in, validated Parquet, quarantine and manifest out.

Every source record ends up either as one row of `images.parquet` (with its non-blank captions in
`captions.parquet`) or as one row of `quarantine.parquet` with a reason; nothing is dropped silently.
`image_id` numbers the kept images in annotation order, `caption_id` numbers their captions in order,
and `person_id` is the source's `id`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tasks.core.errors import TbprError
from tasks.core.outputs import check_out_folder
from tasks.data.layout import (
    CAPTIONS,
    CAPTIONS_SCHEMA,
    IMAGES,
    MANIFEST,
    OUTPUTS,
    QUARANTINE,
    QUARANTINE_SCHEMA,
)
from tasks.data.prepare.images import check_image, file_digest, ordered_map
from tasks.data.prepare.layouts import (
    IMAGE_DIR,
    VAL_RULE,
    Annotation,
    Format,
    Layout,
    get_layout,
    load_annotation,
)
from tasks.data.prepare.manifest import (
    ContentHash,
    SplitCounts,
    build_manifest,
    is_up_to_date,
    manifest_identity,
    output_sizes,
    read_manifest,
)
from tasks.data.prepare.validate import Candidate, Rejection, plan_records
from tasks.data.prepare.writer import (
    AtomicOutputs,
    CaptionRow,
    ImageRow,
    ImageWriter,
    QuarantineRow,
    rows_table,
    write_json,
    write_rows,
)
from tasks.data.quality import quality_flags, quality_summary
from tasks.data.synth.layout import MARKER as SYNTH_MARKER  # `tbpr synth` output: "synthetic"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareSummary:
    """What a prepare produced (or found already up to date)."""

    dataset: str
    fmt: str
    out: Path
    records: int
    splits: dict[str, SplitCounts]
    quarantine: dict[str, int]  # reason -> records
    content_hash: str
    up_to_date: bool  # True when the outputs already matched the inputs and nothing was written
    quality: dict[str, Any] = field(default_factory=dict)  # flag -> {count, examples} (`tasks.data.quality`)

    @property
    def images(self) -> int:
        return sum(counts.images for counts in self.splits.values())

    @property
    def quarantined(self) -> int:
        return sum(self.quarantine.values())


@dataclass
class _Tally:
    """Rows and counts accumulated while the images stream through."""

    splits: tuple[str, ...]
    captions: list[CaptionRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    persons: dict[str, set[int]] = field(default_factory=dict)
    images: Counter[str] = field(default_factory=Counter)
    images_kept: int = 0
    kept: dict[str, list[Any]] = field(
        default_factory=lambda: {"image_id": [], "person_id": [], "split": []}
    )  # of every kept image, for the quality report

    def keep(self, candidate: Candidate) -> int:
        image_id = self.images_kept
        self.images_kept += 1
        for column, value in zip(self.kept, (image_id, candidate.person_id, candidate.split), strict=True):
            self.kept[column].append(value)
        self.persons.setdefault(candidate.split, set()).add(candidate.person_id)
        self.images[candidate.split] += 1
        for text in candidate.captions:
            row = CaptionRow(len(self.captions), image_id, candidate.person_id, candidate.split, text)
            self.captions.append(row)
        return image_id

    def reject(self, index: int, record: Any, reason: str) -> None:
        self.quarantine.append(QuarantineRow(index, record_json(record), reason))

    def split_counts(self) -> dict[str, SplitCounts]:
        captions = Counter(row.split for row in self.captions)
        return {
            split: SplitCounts(len(self.persons.get(split, ())), self.images[split], captions[split])
            for split in self.splits
        }


def record_json(record: Any) -> str:
    """The raw record as JSON text, Unicode kept; escaped where it is not valid UTF-8."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record)
    return text


def dataset_name(source: Path, layout: Layout) -> str:
    """ "synthetic" for a `tbpr synth` output, else the format name."""
    return "synthetic" if (source / SYNTH_MARKER).is_file() else layout.name


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Progress]:
    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not enabled) as bar:
        bar.add_task("records", total=total)
        yield bar


def _stream_images(
    candidates: list[Candidate],
    annotation: Annotation,
    tally: _Tally,
    writer: ImageWriter,
    workers: int,
    bar: Progress,
) -> str:
    """Check every candidate's image, write the good ones, quarantine the rest; the content hash."""
    content = ContentHash(annotation.raw)
    checks = ordered_map(check_image, [c.image_path for c in candidates], workers)
    for c, check in zip(candidates, checks, strict=True):
        content.add(c.file_path, check.digest)
        if check.reason is not None or check.data is None:
            tally.reject(c.index, annotation.records[c.index], check.reason or "")
        else:
            image_id = tally.keep(c)
            writer.add(
                ImageRow(image_id, c.person_id, c.split, c.file_path, check.data, check.height, check.width)
            )
        bar.advance(bar.task_ids[0])
    return content.hexdigest()


def _input_hash(annotation: Annotation, candidates: list[Candidate], workers: int) -> str:
    """The content hash `_stream_images` would compute, by reading (not decoding) the images."""
    digests = ordered_map(file_digest, [c.image_path for c in candidates], workers)
    return (
        ContentHash(annotation.raw)
        .add_all(zip((c.file_path for c in candidates), digests, strict=True))
        .hexdigest()
    )


def _summary(manifest: dict[str, Any], out: Path, *, up_to_date: bool) -> PrepareSummary:
    return PrepareSummary(
        dataset=manifest["dataset"],
        fmt=manifest["source"]["format"],
        out=out,
        records=manifest["records"],
        splits={name: SplitCounts(**counts) for name, counts in manifest["splits"].items()},
        quarantine=dict(manifest["quarantine"]),
        content_hash=manifest["content_hash"],
        up_to_date=up_to_date,
        quality=dict(manifest.get("quality", {})),
    )


def _write_outputs(
    annotation: Annotation,
    plan: list[Candidate | Rejection],
    identity: dict[str, Any],
    layout: Layout,
    out: Path,
    *,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Write the three Parquet files and the manifest atomically; the manifest written."""
    tally = _Tally(layout.splits)
    for item in plan:
        if isinstance(item, Rejection):
            tally.reject(item.index, annotation.records[item.index], item.reason)
    candidates = [item for item in plan if isinstance(item, Candidate)]
    with AtomicOutputs(out) as outputs, _progress(progress, len(plan)) as bar:
        bar.advance(bar.task_ids[0], len(plan) - len(candidates))
        paths = {name: outputs.stage(name) for name in OUTPUTS}
        writer = ImageWriter(paths[IMAGES])
        try:
            content_hash = _stream_images(candidates, annotation, tally, writer, workers, bar)
        finally:
            writer.close()
        write_rows(paths[CAPTIONS], tally.captions, CAPTIONS_SCHEMA)
        quarantine = sorted(tally.quarantine, key=lambda row: row.record_index)
        write_rows(paths[QUARANTINE], quarantine, QUARANTINE_SCHEMA)
        identity = {**identity, "content_hash": content_hash}
        reasons = Counter(row.reason for row in quarantine)
        captions = rows_table(tally.captions, CAPTIONS_SCHEMA)
        manifest = build_manifest(
            identity,
            records=len(plan),
            splits=tally.split_counts(),
            quarantine=dict(reasons),
            outputs=output_sizes(paths),
            quality=quality_summary(quality_flags(pa.table(tally.kept), captions)),
        )
        write_json(outputs, MANIFEST, manifest)
        (out / MANIFEST).unlink(missing_ok=True)  # no stale manifest beside half-replaced outputs
        outputs.commit()
    return manifest


def prepare_dataset(
    source: Path, fmt: Format, out: Path, *, workers: int = 2, progress: bool = True
) -> PrepareSummary:
    """Validate a public dataset layout at `source` and write DATA files to `out`.

    An unusable source (missing folder, no annotation file, invalid JSON, top level not a list,
    unknown format) raises `TbprError` before anything is written. If `out` already holds a
    manifest with the same content hash and inputs and its outputs are intact, nothing is written
    and the summary says `up_to_date`; otherwise all outputs are rewritten (byte-identical for
    identical inputs). `workers` threads read and decode the images.
    """
    layout = get_layout(fmt)
    source, out = source.resolve(), out.resolve()
    check_out_folder(out, command="prepare", marker=MANIFEST, names=OUTPUTS, inputs={"source folder": source})
    annotation = load_annotation(source, layout)
    plan = plan_records(annotation.records, layout, source / IMAGE_DIR)
    identity = manifest_identity(
        dataset=dataset_name(source, layout),
        fmt=layout.name,
        source=source,
        annotation=annotation.path,
        content_hash="",
    )
    if layout.val_percent:  # the val split tbpr made: part of what the outputs were made from
        identity["val_split"] = {"from": "train", "percent": layout.val_percent, "rule": VAL_RULE}
    previous = read_manifest(out)
    if previous is not None:
        candidates = [item for item in plan if isinstance(item, Candidate)]
        identity["content_hash"] = _input_hash(annotation, candidates, workers)
        if is_up_to_date(previous, out, identity):
            logger.info("%s is up to date with %s (content hash matches)", out, source)
            return _summary(previous, out, up_to_date=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TbprError(f"cannot create output folder {out} ({exc}); choose another --out") from None
    manifest = _write_outputs(annotation, plan, identity, layout, out, workers=workers, progress=progress)
    summary = _summary(manifest, out, up_to_date=False)
    logger.info(
        "prepared %d images, quarantined %d records into %s", summary.images, summary.quarantined, out
    )
    return summary
