"""prefect.yaml end to end: a real Prefect server, a process work pool, `prefect deploy --all`, a
worker, and `prefect deployment run 'tbpr-pipeline/nightly-retrain' --watch` on the tiny config with a
gallery (its new champions re-embed the gallery), then `refresh-gallery/refresh-gallery` after a file
was added (only that file is encoded)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.config import PipelineConfig, load_config
from tasks.embed.layout import FOLDER_JSON
from tests.embed.folder_images import GOOD, save, write_image_folder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = Path(__file__).with_name("tiny.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "TBPR_HOME": str(tmp_path / "home"),
        "PWD": str(ROOT),  # prefect.yaml's pull step: set_working_directory {{ $PWD }}
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        _stop(process, signal.SIGINT)
        pytest.fail(f"prefect server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield env
    _stop(process, signal.SIGINT)


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_nightly_retrain_deployment_completes(server: dict[str, str], tmp_path: Path) -> None:
    created = _prefect(server, "work-pool", "create", "tbpr", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(server, "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "tbpr"],
        env=server,
        cwd=ROOT,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    images, emb = write_image_folder(tmp_path / "images"), tmp_path / "gallery"
    try:
        gallery = [f"gallery.folder={images}", f"gallery.emb={emb}"]
        params = {"config": load_config(PipelineConfig, TINY, gallery).model_dump(mode="json")}
        _run_deployment(server, "tbpr-pipeline/nightly-retrain", params, tmp_path)
        assert json.loads((emb / FOLDER_JSON).read_text())["counts"]["encoded"] == len(GOOD)
        save(images, "cam9/new.png", "PNG", (60, 120), "pink")
        _run_deployment(
            server,
            "refresh-gallery/refresh-gallery",
            {"config": {"folder": str(images), "emb": str(emb)}},
            tmp_path,
        )
    finally:
        _stop(worker, signal.SIGINT)
    assert (Path(server["TBPR_HOME"]) / "warehouse.duckdb").is_file()
    counts = json.loads((emb / FOLDER_JSON).read_text())["counts"]
    assert (counts["added"], counts["encoded"], counts["removed"]) == (1, 1, 0)


def _run_deployment(env: dict[str, str], name: str, params: dict[str, object], logs: Path) -> None:
    run = _prefect(env, "deployment", "run", name, "--params", json.dumps(params), "--watch", timeout=540)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "Completed" in output, (
        output[-3000:] + (logs / "worker.log").read_text()[-3000:]
    )
