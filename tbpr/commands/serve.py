"""`tbpr serve EMB [--port P] [--host H]`: the search page and JSON API of an EMB (`tasks.serve.app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tbpr.app import app
from tbpr.options import DeviceName, IndexName, plain_console, quiet_faiss


@app.command()
def serve(
    emb: Annotated[
        Path, typer.Argument(help="EMB folder written by `tbpr embed` (an image folder's or a split's).")
    ],
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 serves other machines too.")
    ] = "127.0.0.1",
    index: Annotated[IndexName, typer.Option(help="FAISS index of the first stage.")] = "flat",
    device: Annotated[DeviceName, typer.Option()] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch and FAISS threads.")] = None,
    watch: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds between checks for a re-embedded EMB, served without a restart (0: never)."
        ),
    ] = 2.0,
) -> None:
    """Serve a web page and an HTTP API to search EMB by description (GET /, GET /api/search?q=&k=,
    GET /healthz, GET /metrics); an EMB re-embedded in place is picked up without a restart."""
    quiet_faiss()
    import uvicorn

    from tasks.core.device import set_threads
    from tasks.serve.app import create_app
    from tasks.serve.gallery import Gallery
    from tasks.serve.live import LiveGallery
    from tasks.serve.server import LimitedH11Protocol, bind, url

    set_threads(threads)
    live = LiveGallery(lambda: Gallery(emb, device=device, index=index), emb, check_every=watch or None)
    gallery = live.current
    sock = bind(host, port)  # a busy port is an error before anything is printed
    plain_console().print(
        f"serving {gallery.info.num_images:,} images of {emb} ({gallery.info.variant}) at {url(sock)} "
        "(Ctrl+C stops)"
    )
    config = uvicorn.Config(create_app(live), http=LimitedH11Protocol, log_level="warning")
    live.start()  # a re-embedded EMB is served without a restart
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        live.stop()


@app.command()
def calibrate(
    val_emb: Annotated[
        Path,
        typer.Argument(help="EMB of a val split (`tbpr embed DATA --split val --run MODEL --out VAL_EMB`)."),
    ],
    false_alarm: Annotated[
        float, typer.Option(min=0.001, max=0.5, help="Share of absent people allowed a match.")
    ] = 0.05,
    device: Annotated[DeviceName, typer.Option()] = "auto",
) -> None:
    """Calibrate the model of VAL_EMB for open-set answers: a decision threshold at that false-alarm
    rate and a confidence curve, written beside its checkpoint (open_set.json) for `tbpr serve`."""
    quiet_faiss()
    from tasks.embed.layout import EmbedInfo
    from tasks.serve.open_set import calibrate as run_calibration
    from tasks.serve.open_set import write

    result = run_calibration(val_emb, false_alarm, device=device)
    path = write(result, Path(EmbedInfo.read(val_emb).checkpoint))
    plain_console().print(
        f"threshold {result.threshold:.4f}: on {result.queries:,} val queries, {100 * result.false_alarm:.1f}% "
        f"of absent people matched (target {100 * false_alarm:.1f}%), {100 * result.miss_rate:.1f}% of present "
        f"people missed; written to {path}"
    )
