"""Cascades across models on a pipeline run's models: a cheap model proposes, a pairwise model re-ranks.

Takes the EMB folders of a `tbpr run` (`--run $TBPR_HOME/runs/<time>-<name>`, default the latest run
under TBPR_HOME; make one with `tbpr run --profile quick --set keep_emb=all` in a minute or two: a run
keeps only each variant's best val seed's EMB unless told to keep all).
For every seed of the run, `global` -> `cross_scan` and `global` -> `cross_fusion` (`--rerankers`) at
each k of `--ks` (`all` = the gallery) against each model alone: exhaustive, and pruned on its own
index at the same k. Prints, per setting, R1 and mAP (means over the seeds), seconds per 1,000 queries
(first stage + re-ranking, or the exhaustive blocks; the best of `--repeat` runs, model loading and
query/gallery embedding excluded) and pairs scored per query; writes the rows to `--out` as JSON.
Nothing is logged to MLflow; the scored outputs go under `--work` (deleted first).

    python benchmarks/cascade.py [--run .tbpr/runs/<run>] [--ks 5,10,20,50,100,all] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from tasks.core.device import set_threads
from tasks.core.env import home
from tasks.embed.layout import EmbedInfo
from tasks.score.run import score


def latest_run(runs: Path) -> Path:
    found = sorted(p for p in runs.glob("*") if (p / "emb").is_dir())
    if not found:
        raise SystemExit(f"no pipeline run with emb/ under {runs}; run `tbpr run --profile quick` first")
    return found[-1]


def models_by_seed(run: Path) -> dict[str, dict[str, Path]]:
    """seed label ("" for a run of one seed) -> variant -> EMB folder of that run."""
    seeds: dict[str, dict[str, Path]] = defaultdict(dict)
    for emb in sorted((run / "emb").iterdir()):
        if (emb / "embed.json").is_file():
            match = re.fullmatch(r"(.+?)(-seed\d+)?", emb.name)
            assert match is not None
            seeds[match.group(2) or ""][EmbedInfo.read(emb).variant] = emb
    return seeds


def best(emb: Path, out: Path, repeat: int, **options: Any) -> dict[str, float]:
    """The fastest of `repeat` scorings: its metrics, seconds and pairs per 1,000 queries / per query."""
    results = [score(emb, out / f"try{i}", track=False, **options) for i in range(repeat)]
    result = min(results, key=lambda r: r.seconds)
    queries = int(result.details["num_queries"])
    return {
        "R1": result.metrics["R1"],
        "mAP": result.metrics["mAP"],
        "s_per_1k": 1000 * result.seconds / queries,
        "pairs_per_query": result.pairs_scored / queries,
    }


def settings(ks: list[int | None], gallery: int) -> list[tuple[str, int | None, bool]]:
    """(mode, k, cascade) of every scoring of one re-ranking model: exhaustive, then per k its own
    pruned and the cascade (k None: the gallery)."""
    rows: list[tuple[str, int | None, bool]] = [("exhaustive", None, False)]
    for k in ks:
        rows += [("pruned", k or gallery, False), ("pruned", k or gallery, True)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, help="a pipeline run folder (default: the latest under TBPR_HOME)"
    )
    parser.add_argument("--proposer", default="global")
    parser.add_argument("--rerankers", default="cross_scan,cross_fusion")
    parser.add_argument("--ks", default="5,10,20,50,100,all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tbpr-cascade"))
    parser.add_argument("--out", type=Path, default=None, help="rows as JSON")
    args = parser.parse_args()
    set_threads(args.threads)
    run = args.run or latest_run(home().runs)
    rerankers = args.rerankers.split(",")
    found = models_by_seed(run)
    # a run with `keep_emb = "best_val"` (the main job) keeps one seed's EMB per variant: only the seeds
    # that still hold the proposer and every re-ranker can be benchmarked
    seeds = {seed: embs for seed, embs in found.items() if {args.proposer, *rerankers} <= set(embs)}
    if not seeds:
        raise SystemExit(
            f"no seed of {run} has the EMBs of {args.proposer} and {', '.join(rerankers)}; a pipeline run "
            "keeps each variant's best val seed only: run it with `--set keep_emb=all` to benchmark cascades"
        )
    shutil.rmtree(args.work, ignore_errors=True)
    ks = [None if k == "all" else int(k) for k in args.ks.split(",")]
    table: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for seed, embs in sorted(seeds.items()):
        proposer = embs[args.proposer]
        gallery = EmbedInfo.read(proposer).num_images
        table[(args.proposer, "-", "-")].append(
            best(proposer, args.work / seed / "p-ex", args.repeat, mode="exhaustive")
        )
        for variant in rerankers:
            for mode, k, cascade in settings(ks, gallery):
                first = args.proposer if cascade else (variant if k else "-")
                k_label = "-" if k is None else ("all" if k >= gallery else str(k))
                out = args.work / seed / f"{variant}-{mode}-{k}-{cascade}"
                options: dict[str, Any] = {"mode": mode, "candidates_from": proposer if cascade else None}
                if k is not None:
                    options["top_k"] = min(k, gallery)
                row = best(embs[variant], out, args.repeat, **options)
                table[(variant, first, k_label)].append(row)
    rows = [
        {"model": model, "first_stage": first, "k": k, "seeds": len(runs)}
        | {key: sum(r[key] for r in runs) / len(runs) for key in runs[0]}
        for (model, first, k), runs in table.items()
    ]
    print(f"models of {run} ({len(seeds)} seed(s)); means over seeds")
    print(f"{'re-ranker':<14}{'first stage':<13}{'k':>5}{'R1':>8}{'mAP':>8}{'s/1k q':>10}{'pairs/q':>9}")
    for r in rows:
        print(
            f"{r['model']:<14}{r['first_stage']:<13}{r['k']:>5}{r['R1']:>8.2f}{r['mAP']:>8.2f}"
            f"{r['s_per_1k']:>10.3f}{r['pairs_per_query']:>9.1f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
