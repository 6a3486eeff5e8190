"""`tbpr score EMB --mode exhaustive|pruned --out OUT` and `tbpr search EMB "text"`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from tbpr.app import app
from tbpr.options import DeviceName, IndexName, Scheduler, Shards, plain_console, quiet_faiss


@app.command()
def score(
    emb: Annotated[Path, typer.Argument(help="EMB folder written by `tbpr embed`.")],
    mode: Annotated[
        Literal["exhaustive", "pruned"], typer.Option(help="All pairs, or FAISS top-k re-ranked.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for rankings.parquet and metrics.json.")],
    top_k: Annotated[int, typer.Option(min=1, help="Candidates re-ranked per query (pruned).")] = 64,
    index: Annotated[IndexName, typer.Option(help="FAISS index of the first stage (pruned).")] = "flat",
    memory_budget_mb: Annotated[
        float, typer.Option(min=1, help="Working memory of one scoring block.")
    ] = 512,
    device: Annotated[DeviceName, typer.Option()] = "auto",
    precision: Annotated[
        Literal["fp32", "bf16", "auto"],
        typer.Option(
            help="Pair-scorer matmuls: fp32 (exact) or bf16 (~2x faster exhaustive on AVX-512 BF16, "
            "emulated and slow without it); auto: bf16 where native, else fp32."
        ),
    ] = "fp32",
    threads: Annotated[int | None, typer.Option(min=1, help="torch and FAISS threads.")] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            help="Pruned: each query its own k <= --top-k (stop when no candidate can enter its top 10)."
        ),
    ] = False,
    candidates_from: Annotated[
        Path | None,
        typer.Option(
            help="Pruned: another model's EMB of the same queries and gallery whose FAISS index proposes "
            "the top k that EMB's model re-ranks (a cascade, e.g. a `global` EMB)."
        ),
    ] = None,
    reranker: Annotated[
        Path | None,
        typer.Option(
            help="Pruned: a local Hugging Face cross-encoder folder (BLIP ITM, `save_pretrained`) that "
            "re-ranks the top k of EMB's index from the captions and the images of EMB's DATA."
        ),
    ] = None,
    shards: Shards = 1,
    scheduler: Scheduler = None,
    track: Annotated[bool, typer.Option(help="Log an MLflow scoring run.")] = True,
    parent_run_id: Annotated[str | None, typer.Option(help="MLflow parent run (a pipeline run).")] = None,
) -> None:
    """Rank every query of EMB against its gallery; write rankings, metrics and an MLflow run."""
    quiet_faiss()
    from tasks.core.device import set_threads
    from tasks.core.outputs import check_outside_home
    from tasks.score.run import score as run_score

    check_outside_home(out)
    set_threads(threads)
    result = run_score(
        emb,
        out,
        mode=mode,
        top_k=top_k,
        index=index,
        memory_budget_mb=memory_budget_mb,
        device=device,
        precision=precision,
        track=track,
        parent_run_id=parent_run_id,
        shards=shards,
        scheduler=scheduler,
        adaptive=adaptive,
        candidates_from=candidates_from,
        reranker=reranker,
    )
    title = f"{result.mode}" + (f" ({result.index}, k={result.top_k})" if result.top_k else "")
    if result.details.get("candidates"):
        title += f", {result.details['candidates']} -> {result.details['variant']}"
    table = Table(title=f"{title}: {out}")
    for column in ("R1", "R5", "R10", "mAP", "mINP", "pairs scored", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{result.metrics[name]:.2f}" for name in ("R1", "R5", "R10", "mAP", "mINP")),
        f"{result.pairs_scored:,}",
        f"{result.seconds:.2f}",
    )
    console = plain_console()
    console.print(table)
    if result.run_id:
        console.print(f"MLflow scoring run: {result.run_id}")


@app.command()
def search(
    emb: Annotated[Path, typer.Argument(help="EMB folder written by `tbpr embed`.")],
    text: Annotated[str, typer.Argument(help='The description, e.g. "a man in a red jacket".')],
    top_k: Annotated[int, typer.Option(min=1, help="Results shown.")] = 10,
    candidates: Annotated[int, typer.Option(min=1, help="FAISS candidates re-ranked by the model.")] = 64,
    index: Annotated[IndexName, typer.Option(help="FAISS index of the first stage.")] = "flat",
    sheet: Annotated[Path | None, typer.Option(help="Contact sheet PNG [default: EMB/search.png].")] = None,
    device: Annotated[DeviceName, typer.Option()] = "auto",
) -> None:
    """One free-text query: ranked image ids (an image folder's: paths) with scores, and a contact sheet."""
    quiet_faiss()
    from tasks.embed.layout import SOURCE_FOLDER, EmbedInfo
    from tasks.score.search import SHEET, contact_sheet, hit_images, search_text
    from tasks.serve.open_set import read as read_open_set

    info = EmbedInfo.read(emb)
    data = info.data_folder()  # checked before searching: the contact sheet draws DATA's images
    hits = search_text(emb, text, top_k=top_k, candidates=candidates, index=index, device=device)
    folder = info.source == SOURCE_FOLDER
    table = Table(title=f"{text!r}")
    columns = ("rank", "path", "score") if folder else ("rank", "image_id", "person_id", "score", "file_path")
    for column in columns:
        table.add_column(column, justify="left" if "path" in column else "right")
    for hit in hits:
        if folder:
            table.add_row(str(hit.rank), hit.file_path, f"{hit.score:.4f}")
        else:
            table.add_row(
                str(hit.rank), str(hit.image_id), str(hit.person_id), f"{hit.score:.4f}", hit.file_path
            )
    console = plain_console()
    console.print(table)
    calibrated = read_open_set(Path(info.checkpoint))  # `tbpr calibrate`: is the person there at all?
    if calibrated is not None and hits:
        verdict = "match" if calibrated.is_match(hits[0].score) else "no confident match"
        console.print(
            f"{verdict}: the best result's confidence is {100 * calibrated.confidence(hits[0].score):.0f}% "
            f"(threshold at {100 * calibrated.false_alarm_target:.0f}% false alarms on val)"
        )
    target = sheet if sheet is not None else emb / SHEET
    contact_sheet(hits, data, target, images=hit_images(emb, hits))
    console.print(f"contact sheet: {target}")
