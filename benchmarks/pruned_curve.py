"""Pruned against exhaustive scoring of trained models at CUHK-PEDES scale: the whole cost/accuracy curve.

For every trained model (`--model variant=REF`: a run id, a checkpoint folder or `models:/tbpr-<v>@champion`
of the MLflow store under TBPR_HOME, e.g. the main job's), the gallery is an unseen synthetic set of
CUHK-PEDES' size (`--identities` new identities drawn with `--seed`, every image and caption used as
test: ~3,100 images x ~6,200 captions), embedded once. Then `tasks.score.run.score` runs exhaustive
(fp32, the reference; and bf16) and pruned scoring with each first stage of `--indexes` (`flat`: exact
cosines; `fastscan`: 4-bit PQ codes, approximate) and k in `--ks`, each with a fixed k and, on exact
first stages, with a per-query k <= k (`--adaptive`), in fp32 and bf16, and prints, per setting:
scoring seconds (FAISS + re-ranking, or the exhaustive blocks; every setting, exhaustive included,
the best of `--repeat` runs; model loading excluded) with the FAISS part of pruned ones, pairs scored, R1 and mAP with their differences
to exhaustive fp32, and the speed-up. Writes docs/pruned_curve.png (R1 and mAP against seconds, log
scale) and every row to docs/pruned_curve.md. A `--work` folder embedded before keeps its EMB: delete it to add a first stage.

    python benchmarks/pruned_curve.py --model cross_scan=models:/tbpr-cross_scan@champion \\
        --model hard_topk=models:/tbpr-hard_topk@champion [--work /tmp/curve] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
from itertools import product
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.device import set_threads
from tasks.data.layout import CAPTIONS, IMAGES, MANIFEST
from tasks.data.prepare import prepare_dataset
from tasks.data.synth import generate
from tasks.embed.encode import embed_split
from tasks.embed.index import APPROXIMATE_SCORES, INDEX_KINDS, check_index_kind
from tasks.score.run import score
from tasks.tracking.models import resolve_checkpoint


def unseen_test_data(work: Path, identities: int, seed: int) -> Path:
    """Synthetic identities never trained on, every image and caption in the test split."""
    data = work / "data"
    if (data / MANIFEST).is_file():
        return data
    generate(work / "source", identities=identities, seed=seed)
    prepared = work / "prepared"
    prepare_dataset(work / "source", "cuhk-pedes", prepared, progress=False)
    data.mkdir(parents=True, exist_ok=True)
    for name in (IMAGES, CAPTIONS):
        table = pq.read_table(prepared / name)
        column = table.schema.get_field_index("split")
        test = pa.array(["test"] * table.num_rows, table.schema.field("split").type)
        pq.write_table(table.set_column(column, table.schema.field("split"), test), data / name)
    shutil.copy(prepared / MANIFEST, data / MANIFEST)
    return data


def run(emb: Path, out: Path, repeat: int, **options: Any) -> dict[str, Any]:
    best = None
    for attempt in range(repeat):
        result = score(emb, out / f"try{attempt}", track=False, **options)
        if best is None or result.seconds < best.seconds:
            best = result
    assert best is not None
    return {
        "seconds": best.seconds,
        "pairs": best.pairs_scored,
        **best.metrics,
        "mean_k": best.details.get("mean_k"),
        "stage1": best.details.get("seconds_stage1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", required=True, help="variant=REF (repeatable)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pruned-curve"))
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--ks", default="4,8,16,32,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--indexes", default="flat,fastscan", help="first stages, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=Path("docs/pruned_curve.png"))
    parser.add_argument("--reuse", action="store_true", help="keep the rows of variants measured before")
    args = parser.parse_args()
    set_threads(args.threads)
    data = unseen_test_data(args.work, args.identities, args.seed)
    ks = [int(k) for k in args.ks.split(",")]
    indexes = [check_index_kind(kind) for kind in args.indexes.split(",")]
    curves: dict[str, list[dict[str, Any]]] = {}
    for spec in args.model:
        variant, _, ref = spec.partition("=")
        checkpoint, _ = resolve_checkpoint(ref)
        done = args.work / f"curve-{variant}.json"
        if args.reuse and done.is_file():
            curves[variant] = json.loads(done.read_text())
            continue
        emb = args.work / f"emb-{variant}"
        if not (emb / "embed.json").is_file():
            embed_split(data, checkpoint, emb, batch_size=128, indexes=indexes, model_ref=ref)
        out = args.work / f"out-{variant}"
        rows = []
        reference = run(emb, out / "exhaustive-fp32", args.repeat, mode="exhaustive", precision="fp32")
        rows.append({"setting": "exhaustive fp32", **reference})
        rows.append(
            {
                "setting": "exhaustive bf16",
                **run(emb, out / "exhaustive-bf16", args.repeat, mode="exhaustive", precision="bf16"),
            }
        )
        for index in indexes:
            for precision in ("fp32", "bf16"):
                for k in ks:
                    for adaptive in (False, True) if index not in APPROXIMATE_SCORES else (False,):
                        name = f"pruned {index} k={k}{' adaptive' if adaptive else ''} {precision}"
                        result = run(emb, out / name.replace(" ", "_"), args.repeat, mode="pruned", top_k=k,
                                     index=index, precision=precision, adaptive=adaptive)  # fmt: skip
                        rows.append({"setting": name, **result})
        print(f"\n{variant} (checkpoint {checkpoint}), {pq.read_metadata(emb / 'queries.parquet').num_rows:,} "
              f"queries x {pq.read_metadata(emb / 'gallery.parquet').num_rows:,} images, {args.threads} threads")  # fmt: skip
        print(markdown(rows))
        curves[variant] = rows
        done.write_text(json.dumps(rows, indent=1))
    (args.work / "curve.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.plot)
    tables = [f"## {variant}\n\n{markdown(rows)}\n" for variant, rows in curves.items()]
    args.plot.with_suffix(".md").write_text(
        f"# Pruned against exhaustive scoring: every setting\n\nWritten by `benchmarks/pruned_curve.py` "
        f"({args.threads} threads; seconds: the best of {args.repeat} runs; stage 1 ms: its FAISS part; "
        f"speed-up and differences against exhaustive fp32).\n\n" + "\n".join(tables)
    )  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of one model's settings; the first row is the reference (exhaustive fp32)."""
    reference = rows[0]
    lines = ["| setting | seconds | stage 1 ms | speed-up | pairs | mean k | R1 | dR1 | mAP | dmAP |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        mean_k = f"{row['mean_k']:.1f}" if row["mean_k"] is not None else "-"
        stage1 = f"{1e3 * row['stage1']:.1f}" if row.get("stage1") is not None else "-"
        lines.append(f"| {row['setting']} | {row['seconds']:.4f} | {stage1} | {reference['seconds'] / row['seconds']:.0f}x | "
                     f"{row['pairs']:,} | {mean_k} | {row['R1']:.2f} | {row['R1'] - reference['R1']:+.2f} | "
                     f"{row['mAP']:.2f} | {row['mAP'] - reference['mAP']:+.2f} |")  # fmt: skip
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = iter(plt.get_cmap("tab20").colors * 2)  # one per line, the same line in both panels
    lines: dict[str, Any] = {}
    for variant, rows in curves.items():
        for metric, axis in zip(("R1", "mAP"), axes, strict=True):
            for index, family, adaptive in product(INDEX_KINDS, ("fp32", "bf16"), (False, True)):
                marker, style = (
                    "o" if family == "fp32" else "s",
                    ":" if adaptive else "-" if index == "flat" else "--",
                )
                chosen = [r for r in rows if r["setting"].startswith(f"pruned {index} ") and r["setting"].endswith(family)
                          and ("adaptive" in r["setting"]) == adaptive]  # fmt: skip
                if chosen:
                    label = f"{variant} {index} {family}{' per-query k' if adaptive else ''}"
                    xs, ys = [r["seconds"] for r in chosen], [r[metric] for r in chosen]
                    colour = lines.setdefault(label, next(colours))
                    axis.plot(xs, ys, style, marker=marker, label=label, color=colour)
            exhaustive = rows[0]
            axis.axhline(exhaustive[metric], color="grey", lw=0.8)
            axis.plot([exhaustive["seconds"]], [exhaustive[metric]], "k*", ms=10)
            axis.set_xscale("log")
            axis.set_xlabel("scoring seconds (2 cores, log)")
            axis.set_ylabel(f"test {metric} (%)")
    axes[0].set_title("R1 against cost (star: exhaustive fp32)")
    axes[1].set_title("mAP against cost; k = 4..64 along each line")
    axes[1].legend(fontsize=5, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
