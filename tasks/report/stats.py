"""Numbers worth trusting: each variant's mean over seeds and queries, a 95% bootstrap interval over
queries and seeds, and the paired difference to the baseline on the same queries with its interval.

One bootstrap replicate draws the queries with replacement once for the whole comparison (so every
variant and the baseline see the same queries: the difference is paired) and each variant's seeds
with replacement independently (different seeds are different models). A replicate's statistic is
the mean over the drawn seeds and queries; the interval is its 2.5th to 97.5th percentile.
Dimension letters: S seeds, Q queries, B bootstrap replicates.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.score.layout import PER_QUERY

# per-query columns of `per_query.parquet` -> the metric they average to, in percent
METRICS = ("R1", "mAP", "mINP")
REPLICATES = 1000
LEVEL = 0.95
# z(1 - alpha/2) + z(power) for a two-sided test at 5% with 80% power: the smallest true difference the
# comparison detects 4 times in 5 is this many bootstrap standard errors of the paired difference
MDE_Z = 1.959964 + 0.841621


@dataclass(frozen=True)
class PerQueryRuns:
    """One variant's per-query results in one comparison: a (S, Q) percent matrix per metric, the rows
    its seeds, the columns the comparison's queries in a shared order."""

    values: Mapping[str, np.ndarray]

    @property
    def seeds(self) -> int:
        return int(next(iter(self.values.values())).shape[0])


def per_query_percent(first_match_rank: np.ndarray, ap: np.ndarray, inp: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query values whose means are R1, mAP and mINP in percent."""
    return {"R1": 100.0 * (first_match_rank == 1), "mAP": 100.0 * ap, "mINP": 100.0 * inp}


def _seed_weights(rng: np.random.Generator, seeds: int, replicates: int) -> np.ndarray:
    """(B, S) share of each seed in a replicate's draw of S seeds with replacement."""
    draws = rng.integers(0, seeds, size=(replicates, seeds))  # (B, S)
    counts = np.zeros((replicates, seeds))
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1.0)
    return counts / seeds


def compare(
    runs: Mapping[str, PerQueryRuns],
    baseline: str = "global",
    *,
    replicates: int = REPLICATES,
    level: float = LEVEL,
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row per variant (sorted by name): `seeds`, `queries`, and for each metric M `M_mean`,
    `M_low`, `M_high`, and `delta_M`, `delta_M_low`, `delta_M_high` against `baseline` (None for the
    baseline itself or when it is absent), and `delta_M_mde`: the minimal detectable effect, the
    smallest true difference found significant with 80% power (`MDE_Z` bootstrap standard errors of
    the paired difference), so "not significant" reads "smaller than this". Deterministic for a given
    `seed`."""
    if not runs:
        return []
    queries = {r.values["R1"].shape[1] for r in runs.values()}
    if len(queries) != 1:
        raise ValueError(f"every variant must have the same queries; got counts {sorted(queries)}")
    num_queries = queries.pop()
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, num_queries, size=(replicates, num_queries))  # (B, Q) shared: paired
    query_weights = np.zeros((replicates, num_queries))
    np.add.at(query_weights, (np.arange(replicates)[:, None], drawn), 1.0 / num_queries)
    tail = 100.0 * (1.0 - level) / 2
    boot: dict[str, dict[str, np.ndarray]] = {}
    for name in sorted(runs):
        # each variant's own generator: adding or removing a variant leaves the others' draws alone
        own = np.random.default_rng((seed, zlib.crc32(name.encode())))
        seed_weights = _seed_weights(own, runs[name].seeds, replicates)  # (B, S)
        boot[name] = {
            metric: ((seed_weights @ matrix) * query_weights).sum(axis=1)  # (B,)
            for metric, matrix in runs[name].values.items()
        }
    rows: list[dict[str, object]] = []
    for name in sorted(runs):
        row: dict[str, object] = {"variant": name, "seeds": runs[name].seeds, "queries": num_queries}
        for metric in METRICS:
            values = boot[name][metric]
            low, high = np.percentile(values, [tail, 100.0 - tail])
            row |= {
                f"{metric}_mean": float(runs[name].values[metric].mean()),
                f"{metric}_low": float(low),
                f"{metric}_high": float(high),
            }
            delta: list[float | None] = [None, None, None, None]
            if name != baseline and baseline in runs:
                diff = values - boot[baseline][metric]  # (B,) paired on the drawn queries
                point = runs[name].values[metric].mean() - runs[baseline].values[metric].mean()
                low_high = map(float, np.percentile(diff, [tail, 100.0 - tail]))
                delta = [float(point), *low_high, MDE_Z * float(diff.std(ddof=1))]
            keys = (f"delta_{metric}", f"delta_{metric}_low", f"delta_{metric}_high", f"delta_{metric}_mde")
            row |= dict(zip(keys, delta, strict=True))
        rows.append(row)
    return rows


@dataclass(frozen=True)
class ScoredModel:
    """One scoring job of the warehouse's `scoring_jobs`, with where its per-query results are."""

    # (dataset, parent_run_id, mode, top_k, index, candidates): compared together (candidates: the
    # variant that proposed a cascade's candidates, None for a single model's job)
    comparison: tuple[object, ...]
    variant: str
    model: str  # the training run (one seed of the variant), or the job itself when unknown
    out_dir: Path


GROUP_COLUMNS = (
    ("dataset", pa.string()),
    ("parent_run_id", pa.string()),
    ("mode", pa.string()),
    ("top_k", pa.int64()),
    ("index", pa.string()),
    ("candidates", pa.string()),
)
STAT_COLUMNS = [("variant", pa.string()), ("seeds", pa.int64()), ("queries", pa.int64())] + [
    (f"{prefix}{metric}{suffix}", pa.float64())
    for metric in METRICS
    for prefix, suffix in (
        ("", "_mean"),
        ("", "_low"),
        ("", "_high"),
        ("delta_", ""),
        ("delta_", "_low"),
        ("delta_", "_high"),
        ("delta_", "_mde"),
    )
]
VARIANT_STATS_SCHEMA = pa.schema([*GROUP_COLUMNS, *STAT_COLUMNS])


def variant_stats_table(models: Sequence[ScoredModel], baseline: str = "global") -> pa.Table:
    """`compare` for every comparison (pipeline run x scoring job settings) whose per-query files
    exist, on the queries all its jobs share, as the warehouse table `variant_stats`."""
    groups: dict[tuple[object, ...], dict[str, dict[str, Path]]] = {}
    for m in models:
        path = m.out_dir / PER_QUERY
        if path.is_file():
            groups.setdefault(m.comparison, {}).setdefault(m.variant, {})[m.model] = path
    rows: list[dict[str, object]] = []
    for comparison, variants in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        tables = {v: [pq.read_table(p) for p in files.values()] for v, files in variants.items()}
        shared = set.intersection(*(set(t["query_id"].to_pylist()) for ts in tables.values() for t in ts))
        if not shared:
            continue
        order = np.array(sorted(shared), dtype=np.int64)
        runs = {v: PerQueryRuns(_stack(ts, order)) for v, ts in tables.items()}
        keys = dict(zip((name for name, _ in GROUP_COLUMNS), comparison, strict=True))
        rows += [keys | row for row in compare(runs, baseline)]
    return pa.Table.from_pylist(rows, schema=VARIANT_STATS_SCHEMA)


def _stack(tables: Sequence[pa.Table], order: np.ndarray) -> dict[str, np.ndarray]:
    """(S, Q) percent matrices of each metric, the columns in `order` of query ids."""
    per_seed = []
    for table in tables:
        ids = table["query_id"].to_numpy()
        sorter = np.argsort(ids)
        where = sorter[np.searchsorted(ids, order, sorter=sorter)]  # row of each id of `order`
        per_seed.append(
            per_query_percent(
                table["first_match_rank"].to_numpy()[where],
                table["ap"].to_numpy()[where],
                table["inp"].to_numpy()[where],
            )
        )
    # seeds in an order fixed by their results, not by their (random) run ids: the bootstrap's seed draws
    # then repeat exactly between two runs of the same job
    per_seed.sort(key=lambda s: tuple(np.concatenate([s[metric] for metric in METRICS]).round(9).tolist()))
    return {metric: np.stack([s[metric] for s in per_seed]) for metric in METRICS}
