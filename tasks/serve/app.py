"""The web service over a `Gallery`: `create_app(gallery)` -> a FastAPI app (`tbpr serve` runs it with
uvicorn). Given a `LiveGallery`, every request answers from the gallery current when it started (a
re-embedded EMB folder is picked up without a restart, `tasks.serve.live`).

    GET /                          the search page (plain HTML and JavaScript, nothing downloaded)
    GET /api/info                  {variant, images, attention, max_k, max_words, max_chars}
    GET /api/search?q=TEXT&k=K&offset=O  [{"rank", "path", "score", "confidence", "match"}, ...], best
                                   first, ranks O+1 to O+K; header X-Tbpr-Verdict: match, no confident
                                   match (no result clears the model's open-set threshold) or uncalibrated
    GET /api/words?q=TEXT          {"words": [...]}: the query's words a heat map can be drawn for
    GET /api/image?path=PATH       the image file of a gallery path: only paths the EMB lists, only regular
                                   files inside the folder (404 else), the bytes embedded (409 else)
    GET /api/heatmap?q=&path=&word=  PNG: the word's attention over that image (heads that attend)
    GET /api/search?...&dedupe=true  the same, near-duplicates hidden (same bytes, or global cosine >= 0.98;
                                   each kept hit's "hidden" counts those it stands for)
    GET /api/similar?path=P&k=&offset=   "more like this": the images most like gallery image P
    POST /api/similar?k=&offset=   search by example: the body an image (Content-Type image/jpeg, png,
                                   webp or bmp; 16 MiB at most, 413 beyond, 415 for another type)
    GET /healthz                   {status, model, model_ref, images, emb, embed_id, emb_age_seconds, ...}
    GET /metrics                   Prometheus text format (`tasks.serve.metrics`)

Bad requests (empty or over-long text, k out of range, a missing or malformed parameter, a word not in
the query, a head without attention) get HTTP 400 and {"error": message}; an image that is gone 404, one
changed since the embed (or a split EMB's DATA re-prepared) 409; a request line or headers over
`tasks.serve.http`'s limit 413.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tasks.core.errors import TbprError
from tasks.serve.files import ServeError
from tasks.serve.gallery import Gallery, check_query
from tasks.serve.live import LiveGallery
from tasks.serve.metrics import ServiceMetrics
from tasks.serve.similar import MAX_UPLOAD, by_image, by_path, hide_duplicates

PAGE = Path(__file__).with_name("page.html")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a ServeError (413) past `limit` bytes (announced or sent)."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise ServeError(f"the upload is {int(announced):,} bytes; the limit is {limit:,}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(f"the upload is over {limit:,} bytes; send a smaller image", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(gallery: Gallery | LiveGallery) -> FastAPI:
    live = gallery if isinstance(gallery, LiveGallery) else LiveGallery.fixed(gallery)
    app = FastAPI(title="tbpr gallery search", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ServiceMetrics(live)
    app.middleware("http")(metrics.middleware)

    @app.exception_handler(TbprError)
    async def bad_request(request: Request, exc: TbprError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request parameters ({problems})"}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return live.current.describe()

    @app.get("/api/search")
    def search(
        q: str, response: Response, k: int = 10, offset: int = 0, dedupe: bool = False
    ) -> list[dict[str, Any]]:
        current = live.current
        if dedupe:  # near-duplicates hidden: ranked deeper, then paged
            check_query(q, k, offset)
            ranked, verdict = current.ranked(q, 3 * (offset + k))
            hits = hide_duplicates(current, ranked)[offset : offset + k]
        else:
            hits, verdict = current.search_page(q, k, offset)
        response.headers["X-Tbpr-Verdict"] = verdict
        response.headers["X-Tbpr-Embed"] = current.info.embed_id
        return hits

    @app.get("/api/similar")
    def more_like_this(path: str, k: int = 10, offset: int = 0) -> list[dict[str, Any]]:
        return by_path(live.current, path, k, offset)

    @app.post("/api/similar")
    async def search_by_example(request: Request, k: int = 10, offset: int = 0) -> list[dict[str, Any]]:
        data = await read_body(request, MAX_UPLOAD)
        content_type = request.headers.get("content-type", "")
        return await run_in_threadpool(by_image, live.current, data, content_type, k, offset)

    @app.get("/api/words")
    def words(q: str) -> dict[str, list[str]]:
        return {"words": live.current.words(q)}

    @app.get("/api/image")
    def image(path: str) -> Response:
        data, mime = live.current.image_bytes(path)
        return Response(data, media_type=mime, headers={"Cache-Control": "no-cache"})

    @app.get("/api/heatmap")
    def heatmap(q: str, path: str, word: str) -> Response:
        return Response(live.current.heatmap(q, path, word), media_type="image/png")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        current = live.current
        return {
            "status": "ok",
            "model": current.info.variant,
            "model_ref": current.info.model_ref,
            "checkpoint": current.info.checkpoint,
            "images": current.info.num_images,
            "emb": str(current.emb),
            "embed_id": current.info.embed_id,
            "emb_age_seconds": round(live.age_seconds(), 3),
            "reloads": live.reloads,
            "last_reload_error": live.last_error,
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        return metrics.exposition()

    return app
