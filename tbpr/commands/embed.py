"""`tbpr embed DATA --run RUN --out EMB`: features and FAISS indexes of a split, for scoring and search;
`tbpr embed --images FOLDER --out EMB [--run RUN]`: the same of a folder of images, incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from tbpr.app import app
from tbpr.options import DeviceName, Scheduler, Shards, plain_console, quiet_faiss


@app.command()
def embed(
    data: Annotated[
        Path | None, typer.Argument(help="Prepared DATA folder (images/captions Parquet); or use --images.")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            help="Train run id, models:/tbpr-<variant>@champion, or a checkpoint folder "
            "[default with --images: the registered champion of best val R1]."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="EMB folder to write (required).")] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="A folder of jpg/png/webp/bmp images (nested, no captions) to embed instead of DATA; "
            "re-running into the same --out encodes only added or changed files."
        ),
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="With --images: larger images are quarantined as decompression bombs.")
    ] = 64_000_000,
    split: Annotated[
        str, typer.Option(help="Split to embed (queries = its captions, gallery = its images).")
    ] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[DeviceName, typer.Option()] = "auto",
    precision: Annotated[
        Literal["fp32", "bf16", "auto"],
        typer.Option(
            help="bf16 autocast speeds up encoding where the CPU has bf16; auto: bf16 there, else fp32."
        ),
    ] = "fp32",
    index: Annotated[
        list[str] | None,
        typer.Option(
            help="FAISS index to build: flat, hnsw, ivf, ivfpq, fastscan (repeat) [default: flat, hnsw, ivf]."
        ),
    ] = None,
    local_dtype: Annotated[
        Literal["float16", "uint8"],
        typer.Option(
            help="Local features (regions, words) as float16, or as 8-bit codes with a range per region "
            "and word: half the size, scores within 8-bit rounding."
        ),
    ] = "float16",
    threads: Annotated[int | None, typer.Option(min=1, help="torch and FAISS threads.")] = None,
    shards: Shards = 1,
    scheduler: Scheduler = None,
) -> None:
    """Embed a split (or an image folder) with a trained model: global embeddings, local features and
    FAISS indexes."""
    quiet_faiss()
    from tasks.core.device import set_threads
    from tasks.core.errors import TbprError
    from tasks.core.outputs import check_outside_home
    from tasks.embed.encode import embed_split
    from tasks.embed.index import DEFAULT_INDEXES, check_index_kind
    from tasks.tracking.models import resolve_checkpoint

    kinds = tuple(check_index_kind(kind) for kind in index or DEFAULT_INDEXES)
    if out is None:
        raise TbprError("--out is required: the EMB folder to write")
    if (data is None) == (images is None):
        raise TbprError("pass either a DATA folder or --images FOLDER (one of them) to embed")
    check_outside_home(out)
    set_threads(threads)
    if images is not None:
        _embed_images(images, out, run, batch_size, device, (precision, local_dtype), kinds, max_pixels)
        return
    assert data is not None
    if run is None:
        raise TbprError(
            "--run is required with DATA: a train run id, models:/tbpr-<variant>@champion or a checkpoint"
        )
    checkpoint, info = resolve_checkpoint(run)
    summary = embed_split(
        data,
        checkpoint,
        out,
        split=split,
        batch_size=batch_size,
        device=device,
        precision=precision,
        indexes=kinds,
        model_ref=run,
        train_run_id=info.get("run_id"),
        shards=shards,
        scheduler=scheduler,
        local_dtype=local_dtype,
    )
    table = Table(title=f"embedded {split} split into {summary.out}")
    columns = ("images (G)", "captions (Q)", "D", "regions (N)", "words (L)", "indexes", "seconds")
    for column in (*columns, "images/s", "captions/s"):
        table.add_column(column, justify="right")
    record = summary.info
    table.add_row(
        f"{record.num_images:,}",
        f"{record.num_queries:,}",
        str(record.embed_dim),
        str(record.num_regions),
        str(record.max_length),
        ", ".join(record.indexes),
        f"{summary.seconds:.1f}",
        f"{summary.images_per_second:,.0f}",
        f"{summary.captions_per_second:,.0f}",
    )
    plain_console().print(table)


def _embed_images(
    images: Path,
    out: Path,
    run: str | None,
    batch_size: int,
    device: str,
    storage: tuple[str, str],
    kinds: tuple[str, ...],
    max_pixels: int,
) -> None:
    """`storage`: (precision, local dtype)."""
    from tasks.embed.folder import COUNTS, check_folder_out, embed_folder
    from tasks.tracking.models import best_champion, resolve_checkpoint

    check_folder_out(images, out)  # before a model is looked up
    console = plain_console()
    if run is None:
        run, reason = best_champion()
        console.print(f"model: {run}, {reason}")
    checkpoint, info = resolve_checkpoint(run)
    summary = embed_folder(
        images,
        checkpoint,
        out,
        batch_size=batch_size,
        device=device,
        precision=storage[0],
        local_dtype=storage[1],
        indexes=kinds,
        max_pixels=max_pixels,
        model_ref=run,
        train_run_id=info.get("run_id"),
    )
    table = Table(title=f"embedded {images} into {summary.out}")
    for column in (*COUNTS, "images (G)", "indexes", "seconds"):
        table.add_column(column, justify="right")
    counts = [f"{summary.counts[name]:,}" for name in COUNTS]
    table.add_row(
        *counts, f"{summary.info.num_images:,}", ", ".join(summary.info.indexes), f"{summary.seconds:.1f}"
    )
    console.print(table)
    if summary.reembedded:
        console.print(
            f"re-embedded every file: the previous EMB's features were not reused ({summary.reembedded})"
        )
    _print_quarantine(summary.out)


def _print_quarantine(emb: Path, shown: int = 10) -> None:
    import pyarrow.parquet as pq

    from tasks.embed.layout import FOLDER_QUARANTINE

    rows = pq.read_table(emb / FOLDER_QUARANTINE, columns=["path", "reason"]).to_pylist()
    if not rows:
        return
    table = Table(title=f"quarantined: {len(rows)} file(s), not embedded ({emb / FOLDER_QUARANTINE})")
    table.add_column("path")
    table.add_column("reason")
    for row in rows[:shown]:
        table.add_row(row["path"], row["reason"])
    if len(rows) > shown:
        table.add_row(f"... {len(rows) - shown} more", "")
    plain_console().print(table)
