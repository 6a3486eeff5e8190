"""`tbpr embed DATA --run RUN --out EMB`: features and FAISS indexes of a split, for scoring and search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from tbpr.app import app
from tbpr.options import DeviceName, Scheduler, Shards, plain_console, quiet_faiss


@app.command()
def embed(
    data: Annotated[Path, typer.Argument(help="Prepared DATA folder (images/captions Parquet).")],
    run: Annotated[
        str, typer.Option(help="Train run id, models:/tbpr-<variant>@champion, or a checkpoint folder.")
    ],
    out: Annotated[Path, typer.Option(help="EMB folder to write.")],
    split: Annotated[
        str, typer.Option(help="Split to embed (queries = its captions, gallery = its images).")
    ] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[DeviceName, typer.Option()] = "auto",
    precision: Annotated[
        Literal["fp32", "bf16"], typer.Option(help="bf16 autocast speeds up CPU encoding.")
    ] = "fp32",
    index: Annotated[
        list[str] | None,
        typer.Option(
            help="FAISS index to build: flat, hnsw, ivf, ivfpq, fastscan (repeat) [default: flat, hnsw, ivf]."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch and FAISS threads.")] = None,
    shards: Shards = 1,
    scheduler: Scheduler = None,
) -> None:
    """Embed a split with a trained model: global embeddings, local features and FAISS indexes."""
    quiet_faiss()
    from tasks.core.device import set_threads
    from tasks.core.outputs import check_outside_home
    from tasks.embed.encode import embed_split
    from tasks.embed.index import DEFAULT_INDEXES, check_index_kind
    from tasks.tracking.models import resolve_checkpoint

    kinds = tuple(check_index_kind(kind) for kind in index or DEFAULT_INDEXES)
    check_outside_home(out)
    set_threads(threads)
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
