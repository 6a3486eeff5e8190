"""Throughput of `prepare_dataset`: N random ~384x128 PNGs in a CUHK-PEDES layout, images/s printed.

    .venv/bin/python benchmarks/prepare_throughput.py [--images 2000] [--workers 1 2 4]

Target: at least 300 images/s on 2 cores. Wall-clock figures depend on what else runs; images per
CPU-second (process time, all threads) is the load-independent cost. Images are smooth random shapes plus sensor-like noise
(PNG of ~70 KB, between street photos' JPEGs and pure noise), decoded in full by the checks.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.data.prepare import prepare_dataset


def make_png(rng: np.random.Generator, height: int = 384, width: int = 128) -> bytes:
    """A random pedestrian-sized PNG: a coarse colour field upscaled, plus per-pixel noise."""
    coarse = rng.integers(0, 256, size=(12, 4, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16
    )
    noisy = np.clip(smooth + rng.integers(-6, 7, size=smooth.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    return buffer.getvalue()


def build_source(root: Path, images: int, seed: int = 0) -> int:
    """A CUHK-PEDES layout with `images` PNGs (two per identity); total image bytes."""
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True)
    records, total = [], 0
    for index in range(images):
        data = make_png(rng)
        total += len(data)
        (root / "imgs" / f"{index:06d}.png").write_bytes(data)
        pid = index // 2 + 1
        records.append(
            {
                "id": pid,
                "file_path": f"{index:06d}.png",
                "captions": [f"person {pid}", "a walker"],
                "split": "train",
            }
        )
    (root / "reid_raw.json").write_text(json.dumps(records))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        started = time.perf_counter()
        total = build_source(source, args.images)
        print(
            f"built {args.images} PNGs, mean {total / args.images / 1024:.0f} KiB, in {time.perf_counter() - started:.1f} s"
        )
        for workers in args.workers:
            out = Path(tmp) / f"data-{workers}"
            started, cpu_started = time.perf_counter(), time.process_time()
            summary = prepare_dataset(source, "cuhk-pedes", out, workers=workers, progress=False)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            assert summary.images == args.images, summary
            started = time.perf_counter()
            again = prepare_dataset(source, "cuhk-pedes", out, workers=workers, progress=False)
            noop = time.perf_counter() - started
            assert again.up_to_date
            print(
                f"workers={workers}: {args.images / seconds:,.0f} images/s ({seconds:.2f} s, "
                f"{total / seconds / 2**20:.0f} MiB/s; {args.images / cpu:,.0f} images per CPU-second); "
                f"no-op re-run {noop:.2f} s"
            )


if __name__ == "__main__":
    main()
