"""Operating the service: /healthz and /metrics (Prometheus text) answer from the same app, and a
gallery re-embedded in place under a running server (uvicorn on loopback) is picked up without a
restart, every request answered whole from the old gallery or the new one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tasks.embed.layout import EmbedInfo
from tasks.score.search import search_text
from tasks.serve.app import create_app
from tasks.serve.gallery import Gallery
from tasks.serve.live import LiveGallery
from tests.embed.folder_images import GOOD, save, write_image_folder


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_healthz_and_metrics(served_emb: Path) -> None:
    client = TestClient(create_app(Gallery(served_emb)))
    health = client.get("/healthz").json()
    info = EmbedInfo.read(served_emb)
    assert health["status"] == "ok" and health["model"] == "cross_scan" and health["images"] == len(GOOD)
    assert health["embed_id"] == info.embed_id and health["reloads"] == 0
    age = time.time() - (served_emb / "embed.json").stat().st_mtime
    assert 0 <= health["emb_age_seconds"] <= age + 1
    for _ in range(3):
        assert client.get("/api/search", params={"q": "a man in red", "k": 2}).status_code == 200
    assert client.get("/api/search", params={"q": "", "k": 2}).status_code == 400
    assert client.get("/no/such/page").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    search = (("endpoint", "/api/search"), ("status", "200"))
    assert samples[("tbpr_serve_requests_total", search)] == 3
    assert samples[("tbpr_serve_requests_total", (("endpoint", "/api/search"), ("status", "400")))] == 1
    assert samples[("tbpr_serve_requests_total", (("endpoint", "other"), ("status", "404")))] == 1
    assert samples[("tbpr_serve_request_seconds_count", (("endpoint", "/api/search"),))] == 4
    infinite = (("endpoint", "/api/search"), ("le", "+Inf"))
    assert samples[("tbpr_serve_request_seconds_bucket", infinite)] == 4
    assert samples[("tbpr_serve_gallery_images", ())] == len(GOOD)
    assert samples[("tbpr_serve_gallery_age_seconds", ())] >= 0


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free loopback port; its URL."""
    import uvicorn

    from tasks.serve.server import LimitedH11Protocol, bind, url

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, http=LimitedH11Protocol, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield url(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _answer(hits: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(h["path"], round(float(h["score"]), 4)) for h in hits]  # type: ignore[arg-type]


def test_a_re_embed_under_a_running_server_is_picked_up_whole(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.embed.folder import embed_folder

    images = write_image_folder(tmp_path / "images")
    emb = tmp_path / "emb"
    checkpoint = tiny_checkpoint("global")
    embed_folder(images, checkpoint, emb, batch_size=4)
    query, k = "a person in a red coat", 10
    old = _answer([{"path": h.file_path, "score": h.score} for h in search_text(emb, query, top_k=k)])
    live = LiveGallery(lambda: Gallery(emb), emb, check_every=0.05)
    answers: list[tuple[int, object]] = []
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                response = http.get("/api/search", params={"q": query, "k": k})
                answers.append((response.status_code, response.json()))

    with running(create_app(live)) as url:
        live.start()
        clients = [threading.Thread(target=client, args=(url,)) for _ in range(3)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(0.5)
            for seed, colour in enumerate(("red", "purple", "orange")):  # new people, one gone
                save(images, f"cam3/new{seed}.png", "PNG", (50, 100), colour, seed)
            (images / "cam1/a.jpg").unlink()
            embed_folder(images, checkpoint, emb, batch_size=4)  # in place, while requests run
            deadline = time.monotonic() + 60
            while live.reloads == 0:
                assert time.monotonic() < deadline, f"the re-embed was not picked up: {live.last_error}"
                time.sleep(0.05)
            seen = len(answers)
            while len(answers) < seen + 6:
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=60)
            live.stop()
        health = httpx.get(f"{url}/healthz").json()
    new = _answer([{"path": h.file_path, "score": h.score} for h in search_text(emb, query, top_k=k)])
    assert old != new and any(path.startswith("cam3/") for path, _ in new)
    assert {status for status, _ in answers} == {200}
    kinds = [
        ("old" if _answer(body) == old else "new" if _answer(body) == new else body) for _, body in answers
    ]  # type: ignore[arg-type]
    assert set(kinds) == {"old", "new"}, [k for k in kinds if k not in ("old", "new")][:3]
    assert kinds[-1] == "new"
    assert health["reloads"] == 1 and health["images"] == len(GOOD) + 2
    assert health["embed_id"] == EmbedInfo.read(emb).embed_id


def test_a_damaged_re_embed_keeps_the_old_gallery_serving(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.embed.folder import embed_folder

    images = write_image_folder(tmp_path / "images")
    emb = embed_folder(images, tiny_checkpoint("global"), tmp_path / "emb", batch_size=4).out
    live = LiveGallery(lambda: Gallery(emb), emb, check_every=None)
    client = TestClient(create_app(live))
    before = client.get("/api/search", params={"q": "red", "k": 3}).json()
    text = (emb / "embed.json").read_text().replace(live.current.info.embed_id, "f" * 32)
    (emb / "gallery.parquet").write_bytes(b"not parquet")  # a broken folder with a new embed id
    (emb / "embed.json").write_text(text)
    assert not live.check()
    assert client.get("/api/search", params={"q": "red", "k": 3}).json() == before
    health = client.get("/healthz").json()
    assert health["reloads"] == 0 and "cannot be served" in health["last_reload_error"]


def test_an_older_emb_without_an_embed_id_is_served(served_emb: Path, tmp_path: Path) -> None:
    import json
    import shutil

    emb = Path(shutil.copytree(served_emb, tmp_path / "emb"))
    raw = json.loads((emb / "embed.json").read_text())
    del raw["embed_id"]
    (emb / "embed.json").write_text(json.dumps(raw))
    live = LiveGallery(lambda: Gallery(emb), emb, check_every=None)
    assert live.current.info.embed_id == "" and not live.check()
    assert TestClient(create_app(live)).get("/api/search", params={"q": "red", "k": 2}).status_code == 200
