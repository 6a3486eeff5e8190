"""`tbpr serve` under load, over loopback only: p50/p95/p99 latency and requests/s of GET /api/search at
1, 8 and 32 concurrent clients, on synthetic galleries of 10,000 and 100,000 images (README, "Serving").

The gallery is synthetic (clustered unit embeddings and float16 region features of the model's shapes,
a flat FAISS index, written as an image-folder EMB); the text encoding is real: every request tokenizes
and encodes its query with the model, searches the index for 64 candidates and re-ranks them with the
model's pair scorer, as `tbpr serve` always does. Two models: `global` (cosine re-ranking) and
`cross_scan` (a pairwise cross-attention scorer on the top 64). Without --checkpoint, each is built with
random weights and MiniLM's text shape (6 layers, 384 wide, 12 heads: the same cost as the pretrained
one); the server runs as its own process (`python -m tbpr serve EMB --port 0`), the clients are threads
here, each request counted once. Bounded: --requests per concurrency level.

    python benchmarks/serve_load.py [--images 10000 100000] [--clients 1 8 32] [--requests 200]
                                    [--variants global cross_scan] [--threads 2] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.embed import layout  # noqa: E402
from tasks.embed.encode import embedding_column  # noqa: E402
from tasks.embed.folder import embed_folder  # noqa: E402
from tasks.embed.index import build_index, save_index  # noqa: E402
from tbpr_models import (  # noqa: E402
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
    build_model,
    save_checkpoint,
    variant_config,
)

QUERIES = [
    "a woman in a red coat with a black bag",
    "a man wearing a blue jacket and grey trousers",
    "a young person in a white shirt carrying a backpack",
    "an older man with a green sweater and dark shoes",
    "a girl in a yellow dress with long black hair",
    "a man in a black hoodie and jeans holding a phone",
]


def model_checkpoint(variant: str, out: Path) -> Path:
    """Random weights, MiniLM's text shape, a small image encoder (images are synthetic here)."""
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16)),
        text=TextEncoderConfig(kind="small", hidden=384, layers=6, heads=12, max_length=48),
        embed_dim=256,
    )
    return save_checkpoint(build_model(config, load_pretrained=False).eval(), out)


def synthetic_emb(checkpoint: Path, images: int, root: Path) -> Path:
    """An image-folder EMB of `images` synthetic rows: a real embed of 4 images gives embed.json and the
    region shape, then the gallery files are replaced by clustered synthetic ones."""
    from PIL import Image

    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.new("RGB", (32, 64), (60 * i, 90, 120)).save(folder / f"{i}.png")
    emb = embed_folder(folder, checkpoint, root / f"emb-{images}", batch_size=4, indexes=("flat",)).out
    local = np.load(emb / layout.IMAGE_LOCAL)
    regions, dim = local.shape[1], local.shape[2]
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((images // 4 + 1, 1, dim), dtype=np.float32)
    globals_ = (centres + 0.5 * rng.standard_normal((len(centres), 4, dim), dtype=np.float32)).reshape(
        -1, dim
    )
    globals_ = globals_[:images] / np.linalg.norm(globals_[:images], axis=1, keepdims=True)  # (G, D)
    mapped = np.lib.format.open_memmap(emb / layout.IMAGE_LOCAL, "w+", np.float16, (images, regions, dim))
    for start in range(0, images, 8192):  # (G, N, D) written in blocks
        stop = min(start + 8192, images)
        block = globals_[start:stop, None, :] + 0.3 * rng.standard_normal(
            (stop - start, regions, dim), dtype=np.float32
        )
        mapped[start:stop] = block / np.linalg.norm(block, axis=2, keepdims=True)
    mapped.flush()
    del mapped
    paths = [f"cam{i % 50}/{i:07d}.jpg" for i in range(images)]
    gallery = pa.table({
        "image_id": pa.array(np.arange(images), pa.int64()),
        "person_id": pa.array(np.full(images, -1), pa.int64()),
        "file_path": pa.array(paths),
        "embedding": embedding_column(globals_),
    })  # fmt: skip
    pq.write_table(gallery, emb / layout.GALLERY)
    files = pa.table({
        "path": paths, "sha256": ["0" * 64] * images, "size": pa.array(np.zeros(images), pa.int64()),
        "mtime_ns": pa.array(np.zeros(images), pa.int64()),
    })  # fmt: skip
    pq.write_table(files, emb / layout.FILES)
    save_index(build_index(globals_, "flat"), layout.index_file(emb, "flat"))
    info = layout.EmbedInfo.read(emb)
    dataclasses.replace(info, num_images=images, indexes=("flat",), embed_id=os.urandom(16).hex()).write(emb)
    return emb


def start_server(emb: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "tbpr", "serve", str(emb), "--port", "0", "--device", "cpu"]
    command += ["--threads", str(threads), "--watch", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace")
        if "serving" in line:
            drain = threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True)
            drain.start()  # the server's later log lines never fill the pipe
            return process, line.split(" at ")[1].split()[0].rstrip("/")
    raise RuntimeError(f"tbpr serve did not start (exit {process.wait()})")


def load(url: str, clients: int, requests: int, k: int) -> tuple[np.ndarray, float]:
    """(latencies in seconds, requests/s) of `requests` searches shared by `clients` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in counter:  # shared: each request once
                started = time.perf_counter()
                response = http.get("/api/search", params={"q": QUERIES[n % len(QUERIES)], "k": k})
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.asarray(latencies), requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=["global", "cross_scan"])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead (one variant)")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs; server threads {args.threads}; {args.requests} requests per level; k={args.k}"
    )
    print("| model | gallery | clients | p50 ms | p95 ms | p99 ms | req/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in [args.checkpoint.name] if args.checkpoint else args.variants:
            checkpoint = args.checkpoint or model_checkpoint(variant, Path(tmp) / f"ckpt-{variant}")
            for images in args.images:
                emb = synthetic_emb(checkpoint, images, Path(tmp) / f"{variant}-{images}")
                process, url = start_server(emb, args.threads)
                try:
                    load(url, 1, 5, args.k)  # warm-up
                    for clients in args.clients:
                        latencies, rate = load(url, clients, args.requests, args.k)
                        p50, p95, p99 = np.percentile(latencies * 1000, [50, 95, 99])
                        print(
                            f"| {variant} | {images:,} | {clients} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {rate:.1f} |",
                            flush=True,
                        )
                finally:
                    process.terminate()
                    process.wait(timeout=60)


if __name__ == "__main__":
    main()
