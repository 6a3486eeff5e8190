"""How much pairing variants on seeds narrows the verdict, on real runs (README "Does attention help?").

Reads the exhaustive scoring outputs of one or more pipeline runs of the same data (their seeds
pooled: e.g. `tbpr run` with seeds 0-2, then with `--set 'train.seeds=[3,4,5]'`), and prints for each
variant and family: the difference in R1, then Holm's interval and the design's MDE compared unpaired
(seeds counted apart) and paired on seeds (`tasks.report.stats.difference`; the warehouse pairs from
`PAIRED_SEEDS` shared seeds), and how much of the seed-to-seed spread every variant shares. Usage:

    .venv/bin/python benchmarks/seed_pairing.py DATA RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.report.stats import PAIRED_SEEDS, Comparison, PerQueryRuns, per_query_percent
from tasks.report.verdicts import comparison_tests
from tasks.score.layout import PER_QUERY

MODEL = re.compile(r"(?P<variant>.+)-seed(?P<seed>\d+)$")


def read_runs(run_dirs: list[Path]) -> tuple[dict[str, dict[int, np.ndarray]], np.ndarray]:
    """variant -> seed -> (Q,) per-query R1 (percent), and the query ids, from each run's exhaustive job."""
    r1: dict[str, dict[int, np.ndarray]] = {}
    ids: np.ndarray | None = None
    for run in run_dirs:
        for folder in sorted((run / "score").iterdir()):
            match, path = MODEL.match(folder.name), folder / "exhaustive" / PER_QUERY
            if match is None or not path.is_file():
                continue
            table = pq.read_table(path).sort_by("query_id")
            if ids is None:
                ids = table["query_id"].to_numpy()
            elif not np.array_equal(ids, table["query_id"].to_numpy()):
                raise SystemExit(f"{path}: other queries than the first run's; pass runs of the same data")
            rank = table["first_match_rank"].to_numpy()
            seeds = r1.setdefault(match["variant"], {})
            seeds[int(match["seed"])] = per_query_percent(rank, 1.0 / rank, 1.0 / rank)["R1"]
    if ids is None:
        raise SystemExit(f"no exhaustive scoring outputs under {[str(r) for r in run_dirs]}")
    return r1, ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "data", type=Path, help="the prepared DATA the runs scored (captions.parquet: persons)"
    )
    parser.add_argument(
        "runs", type=Path, nargs="+", help="pipeline run folders ($TBPR_HOME/runs/<time>-<name>)"
    )
    args = parser.parse_args()
    r1, ids = read_runs(args.runs)
    seeds = sorted(set.intersection(*(set(s) for s in r1.values())))
    captions = pq.read_table(args.data / "captions.parquet", columns=["caption_id", "person_id"]).to_pydict()
    person = dict(zip(captions["caption_id"], captions["person_id"], strict=True))
    persons = np.array([person[int(q)] for q in ids])
    matrix = {v: np.stack([by_seed[s] for s in seeds]) for v, by_seed in r1.items()}  # (S, Q)
    means = np.stack([m.mean(axis=1) for m in matrix.values()])  # (V, S)
    shared = means.mean(axis=0) - means.mean()  # (S,) what each seed does to every variant
    residual = means - means.mean(axis=1, keepdims=True) - shared  # (V, S)
    dof = (len(means) - 1) * (len(seeds) - 1)
    print(
        f"{len(matrix)} variants x seeds {seeds}, {len(ids)} queries, {len(set(persons))} persons; "
        f"seed effect on R1 every variant shares: SD {shared.std(ddof=1):.2f}, "
        f"each variant's own: SD {np.sqrt((residual**2).sum() / dof):.2f} (pairing from {PAIRED_SEEDS} seeds)"
    )
    rows: dict[tuple[str, str], dict[bool, dict[str, object]]] = {}
    for paired in (False, True):
        ids_of = tuple(seeds) if paired else None
        runs = {v: PerQueryRuns({"R1": m}, ids_of) for v, m in matrix.items()}
        for row in comparison_tests(Comparison({}, runs, persons)):
            rows.setdefault((str(row["reference"]), str(row["variant"])), {})[paired] = row
    print(
        f"{'vs':7} {'variant':13} {'dR1':>6}  {'unpaired Holm':>14} {'mde':>5}  {'paired Holm':>14} {'mde':>5}"
    )
    for (reference, variant), both in sorted(rows.items()):
        cells = [
            f"{r['holm_low']:+.1f}..{r['holm_high']:+.1f}".rjust(14) + f" {r['mde']:5.1f}"
            for r in both.values()
        ]
        print(f"{reference:7} {variant:13} {both[False]['delta']:+6.2f}  {cells[0]}  {cells[1]}")


if __name__ == "__main__":
    main()
