"""The service against hostile or changing files (issue 32, items 5-9): only regular files inside the
gallery are served (no symbolic link followed, anywhere on the path), a vanished file is a 404, changed
bytes or a re-prepared DATA a 409, never a 500; over-long requests get an HTTP answer; a busy port is
one `error:` line before anything else, and `--port 0` prints the port it got."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasks.core.errors import TbprError
from tasks.embed.layout import EmbedInfo
from tasks.serve.app import create_app
from tasks.serve.gallery import Gallery
from tests.embed.folder_images import write_image_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder_client(tiny_checkpoint: Callable[[str], Path], tmp_path: Path) -> tuple[TestClient, Path]:
    """A client of a fresh image folder's EMB (the folder may be vandalised) and that folder."""
    from tasks.embed.folder import embed_folder

    images = write_image_folder(tmp_path / "images")
    embed_folder(images, tiny_checkpoint("global"), tmp_path / "emb", batch_size=4)
    return TestClient(create_app(Gallery(tmp_path / "emb"))), images


def _error(response: object, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)  # type: ignore[attr-defined]
    return str(response.json()["error"])  # type: ignore[attr-defined]


def test_no_symbolic_link_is_followed(folder_client: tuple[TestClient, Path], tmp_path: Path) -> None:
    client, images = folder_client
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(images / "f.png", outside / "secret.png")
    (images / "f.png").unlink()
    (images / "f.png").symlink_to(outside / "secret.png")  # a listed file replaced by a link outside
    assert "not a regular file inside the gallery" in _error(
        client.get("/api/image", params={"path": "f.png"}), 404
    )
    (images / "cam1/a.jpg").unlink()
    (images / "cam1/a.jpg").symlink_to("/etc/passwd")
    assert "cannot be served" in _error(client.get("/api/image", params={"path": "cam1/a.jpg"}), 404)
    # a folder on the path replaced by a link to a copy of it: the bytes are the same, still refused
    shutil.move(images / "cam2", outside / "cam2")
    (images / "cam2").symlink_to(outside / "cam2")
    assert (images / "cam2/e.JPEG").is_file()
    _error(client.get("/api/image", params={"path": "cam2/e.JPEG"}), 404)
    heat = client.get("/api/heatmap", params={"q": "a man", "path": "cam2/e.JPEG", "word": "man"})
    assert heat.status_code in (400, 404)  # global has no heat maps; never 200 nor 500
    # what was not touched is still served
    assert client.get("/api/image", params={"path": "cam1/b.png"}).status_code == 200


def test_a_fifo_or_a_folder_at_a_listed_path_is_a_404_not_a_hang(
    folder_client: tuple[TestClient, Path],
) -> None:
    client, images = folder_client
    (images / "cam1/b.png").unlink()
    os.mkfifo(images / "cam1/b.png")
    started = time.monotonic()
    assert "no longer a regular file" in _error(client.get("/api/image", params={"path": "cam1/b.png"}), 404)
    assert time.monotonic() - started < 10
    (images / "f.png").unlink()
    (images / "f.png").mkdir()
    _error(client.get("/api/image", params={"path": "f.png"}), 404)


def test_a_vanished_file_is_a_404_and_changed_bytes_a_409(
    served_emb: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.embed.folder import embed_folder

    images = write_image_folder(tmp_path / "images")
    emb = embed_folder(images, tiny_checkpoint("cross_scan"), tmp_path / "emb", batch_size=4).out
    client = TestClient(create_app(Gallery(emb)), raise_server_exceptions=False)
    (images / "cam2/e.JPEG").unlink()
    assert "removed since the gallery was embedded" in _error(
        client.get("/api/image", params={"path": "cam2/e.JPEG"}), 404
    )
    heat = client.get("/api/heatmap", params={"q": "a man in red", "path": "cam2/e.JPEG", "word": "red"})
    assert "removed since" in _error(heat, 404)
    shutil.rmtree(images / "cam1")
    _error(client.get("/api/image", params={"path": "cam1/deep/c.webp"}), 404)
    with (images / "f.png").open("ab") as grown:  # other bytes under the same name
        grown.write(b"\0")
    assert "changed since the gallery was embedded" in _error(
        client.get("/api/image", params={"path": "f.png"}), 409
    )


def test_a_split_emb_of_re_prepared_data_is_refused(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.data.layout import IMAGES
    from tasks.embed.encode import embed_split
    from tests.conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "data")
    emb = tmp_path / "emb"
    embed_split(data, tiny_checkpoint("global"), emb, batch_size=5, model_ref="tiny")
    gallery = Gallery(emb)
    client = TestClient(create_app(gallery), raise_server_exceptions=False)
    path = gallery.searcher.paths[0]
    assert client.get("/api/image", params={"path": path}).status_code == 200
    assert EmbedInfo.read(emb).data_hash  # the embed recorded what it read
    images = pq.read_table(data / IMAGES)  # DATA prepared again: other pixels for the first image
    pixels = images["image"].to_pylist()
    pixels[0] = pixels[-1]
    pq.write_table(
        images.set_column(
            images.schema.get_field_index("image"),
            "image",
            pa.array(pixels, images.schema.field("image").type),
        ),
        data / IMAGES,
    )
    assert "changed since these embeddings were made" in _error(
        client.get("/api/image", params={"path": path}), 409
    )
    with pytest.raises(TbprError, match="changed since these embeddings were made"):
        Gallery(emb)  # and `tbpr serve` refuses to start on it


# --- the real server, over loopback ---------------------------------------------------------------


def _start(emb: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out, (log.with_suffix(".err")).open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tbpr", "serve", str(emb), "--port", str(port), "--device", "cpu"],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            env={**os.environ, "COLUMNS": "400"},
        )


@pytest.fixture(scope="module")
def server(served_emb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`tbpr serve --port 0`: (host, the port it printed)."""
    log = tmp_path_factory.mktemp("serve") / "out.log"
    process = _start(served_emb, 0, log)
    try:
        deadline = time.monotonic() + 90
        while "serving" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tbpr serve did not start: {log.with_suffix('.err').read_text()[-2000:]}")
            time.sleep(0.2)
        line = log.read_text()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert port != 0
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _raw_get(address: tuple[str, int], target: str) -> tuple[int, dict[str, object]]:
    """Send `GET target` in 4 KiB pieces (as a slow client would), read the whole answer."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(address, timeout=30) as sock:
        try:
            for start in range(0, len(request), 4096):
                sock.sendall(request[start : start + 4096])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and shut its side: the answer is still readable
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_port_zero_prints_the_port_it_listens_on(server: tuple[str, int]) -> None:
    status, body = _raw_get(server, "/api/info")
    assert status == 200 and body["images"] == 6


@pytest.mark.parametrize(
    ("length", "status", "message"),
    [
        (100_000, 400, "too long (1 words, 100,000 characters)"),
        (1_000_000, 413, "request line and headers are over"),
    ],
)
def test_over_long_requests_get_an_answer(
    server: tuple[str, int], length: int, status: int, message: str
) -> None:
    got, body = _raw_get(server, "/api/search?q=" + "x" * length)
    assert got == status and message in str(body["error"])
    assert _raw_get(server, "/api/info")[0] == 200  # and the server goes on


def test_a_busy_port_is_one_error_line_before_anything_is_printed(
    server: tuple[str, int], served_emb: Path, tmp_path: Path
) -> None:
    process = _start(served_emb, server[1], tmp_path / "busy.log")
    assert process.wait(timeout=120) == 2
    assert (tmp_path / "busy.log").read_text() == ""  # no "serving ... at" line
    err = (tmp_path / "busy.err").read_text().strip()
    assert err.startswith("error: cannot listen on 127.0.0.1:") and "pass another --port" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_split_emb_whose_data_is_gone_still_searches(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.embed.encode import embed_split
    from tests.conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "data")
    emb = tmp_path / "emb"
    embed_split(data, tiny_checkpoint("global"), emb, batch_size=5, model_ref="tiny")
    shutil.rmtree(data)
    gallery = Gallery(emb)
    client = TestClient(create_app(gallery), raise_server_exceptions=False)
    assert client.get("/api/search", params={"q": "a man in red", "k": 2}).status_code == 200
    assert "is gone" in _error(client.get("/api/image", params={"path": gallery.searcher.paths[0]}), 404)
