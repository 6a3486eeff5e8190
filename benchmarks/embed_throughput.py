"""Embedding throughput of a trained model, and the hours a 10M- or 100M-image gallery takes to embed.

`tasks.embed.encode.embed_split` (what `tbpr embed` runs: decode, resize, the backbone, the head's
compaction, float16 local features written to disk, a flat index) embeds the unseen synthetic set of
`pruned_curve.py` (`--identities` new identities: ~3,100 images and ~6,200 captions at 1,000), timed
per stage; each precision is the best of `--repeat` runs. Prints images/s and captions/s, and the
*extrapolated* hours for 10M and 100M images on this machine's `--threads` threads (linear in the
images: each image is encoded independently; shards on W such machines divide the hours by W).

    python benchmarks/embed_throughput.py --model models:/tbpr-hard_topk@champion [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pruned_curve import unseen_test_data

from tasks.core.device import set_threads
from tasks.embed.encode import EmbedSummary, embed_split
from tasks.tracking.models import resolve_checkpoint

GALLERIES = (10_000_000, 100_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a run id, checkpoint folder or models:/ URI")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pruned-curve"))
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    data = unseen_test_data(args.work, args.identities, args.seed)
    checkpoint, _ = resolve_checkpoint(args.model)
    print(f"{args.model} ({checkpoint}), {args.threads} threads, batch {args.batch}")
    print(
        "| precision | images | images/s | captions | captions/s | index s | 10M images, h | 100M images, h |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for precision in args.precisions.split(","):
        out = args.work / f"emb-throughput-{precision}"
        best: EmbedSummary | None = None
        for _ in range(args.repeat):
            summary = embed_split(
                data, checkpoint, out, batch_size=args.batch, precision=precision, indexes=("flat",)
            )
            if best is None or summary.images_per_second > best.images_per_second:
                best = summary
        shutil.rmtree(out, ignore_errors=True)
        assert best is not None
        hours = [size / best.images_per_second / 3600 for size in GALLERIES]
        print(f"| {precision} | {best.info.num_images:,} | {best.images_per_second:.0f} | "
              f"{best.info.num_queries:,} | {best.captions_per_second:.0f} | "
              f"{best.stage_seconds['indexes']:.2f} | {hours[0]:.1f} | {hours[1]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
