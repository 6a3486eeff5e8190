"""Numbers worth trusting: each variant's mean over seeds and queries with a 95% interval, and the
paired difference to a reference variant on the same queries with its interval and p-value.

Two sources of chance move a leaderboard: which persons are in the test set (their queries are not
independent: a person hard for one model is hard for another, and for its other captions) and which
seeds trained the models (each seed is another model). The variance of a mean (or of a paired
difference) is the sum of two estimated parts (a moment estimator of a crossed random-effects model):

- seeds: the spread of each variant's per-seed means, divided by its number of seeds S (S - 1 degrees
  of freedom; 0 with one seed, which then cannot be estimated);
- persons: the spread of the per-person (paired) differences of the seed-averaged results, weighted
  by each person's share of the queries (P - 1 degrees of freedom), minus the part of it that is
  seed-to-seed noise (already in the seed part).

A difference is paired on queries, and on seeds as well when both variants ran the same
`PAIRED_SEEDS` or more seeds (a seed fixes the training data's order, its augmentation and the initial
projections and classifier, the same for every variant): seed s's model of one variant minus seed
s's of the other is then one draw of the difference, and the variance is that of a single variant's
mean over the (S, Q) differences. What a seed does to every variant alike cancels (in six seeds of the
main job, about half the seed-to-seed spread of R1). With fewer seeds, or other seeds, the two seed
parts add, unpaired: a paired seed part then has S - 1 = 2 degrees of freedom for most of the
variance, and Satterthwaite's t undercovers in Holm's tails (12% family-wise errors instead of 5% in
the null simulation of `tests/report/test_verdict_simulation.py` with 3 seeds; 5-6% with 5 or 6).

The interval is mean +- t x SE with Satterthwaite's degrees of freedom; the p-value is the two-sided
t test's. (A bootstrap that redraws 3 seeds with replacement shrinks the seed variance by a third and
counts the seed-by-query noise twice: in the simulation of `tests/report/test_verdict_simulation.py`
its intervals covered 98% of the time.) Dimension letters: S seeds, Q queries, P persons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import stdtr, stdtrit

from tasks.score.layout import PER_QUERY

# per-query columns of `per_query.parquet` -> the metric they average to, in percent
METRICS = ("R1", "mAP", "mINP")
LEVEL = 0.95
POWER = 0.8  # of the minimal detectable effect (`Estimate.mde`)
PERCENT, DIFFERENCE = (0.0, 100.0), (-100.0, 100.0)  # what a metric and a difference of two can be
MAX_DF = 1e9  # Satterthwaite's degrees of freedom when every part has plenty: the normal distribution
PAIRED_SEEDS = 5  # the fewest shared seeds a difference is paired on (the module's docstring)


@dataclass(frozen=True)
class PerQueryRuns:
    """One variant's per-query results in one comparison: a (S, Q) percent matrix per metric, the rows
    its seeds, the columns the comparison's queries in a shared order."""

    values: Mapping[str, np.ndarray]
    seed_ids: tuple[int, ...] | None = None  # the training seed of each row, when every row's is known

    @property
    def seeds(self) -> int:
        return int(next(iter(self.values.values())).shape[0])

    def pairs_seeds_with(self, other: PerQueryRuns) -> bool:
        """True when both ran the same (known) seeds, `PAIRED_SEEDS` or more, row for row."""
        return (
            self.seed_ids is not None
            and self.seed_ids == other.seed_ids
            and len(self.seed_ids) >= PAIRED_SEEDS
        )


def per_query_percent(first_match_rank: np.ndarray, ap: np.ndarray, inp: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query values whose means are R1, mAP and mINP in percent."""
    return {"R1": 100.0 * (first_match_rank == 1), "mAP": 100.0 * ap, "mINP": 100.0 * inp}


@dataclass(frozen=True)
class Clusters:
    """Which person each query belongs to: queries sorted by person (`order`), where each person's run
    starts (`starts`, (P,)) and how many queries it has (`counts`, (P,))."""

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, persons: np.ndarray | None, queries: int) -> Clusters:
        """From each query's person label (Q,); None: every query is its own person."""
        labels = np.arange(queries) if persons is None else np.asarray(persons)
        if labels.shape != (queries,):
            raise ValueError(f"need one person label per query ({queries}), got shape {labels.shape}")
        order = np.argsort(labels, kind="stable")
        ranked = labels[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]]) if queries else np.zeros(0, int)
        return cls(order, starts, np.diff(np.r_[starts, queries]))

    @property
    def weights(self) -> np.ndarray:
        """(P,) each person's share of the queries."""
        return self.counts / self.counts.sum()

    def means(self, values: np.ndarray) -> np.ndarray:
        """(S, Q) per-query values -> (S, P) per-person means."""
        return np.add.reduceat(values[:, self.order], self.starts, axis=1) / self.counts


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its standard error and degrees of freedom."""

    mean: float
    se: float
    df: float

    def interval(
        self, level: float = LEVEL, bounds: tuple[float, float] | None = None
    ) -> tuple[float, float]:
        """mean +- t x SE, clipped to `bounds` (what the quantity can be: 0..100 for a percentage)."""
        half = self.se * float(stdtrit(self.df, 0.5 + level / 2))
        low, high = self.mean - half, self.mean + half
        return (low, high) if bounds is None else (max(bounds[0], low), min(bounds[1], high))

    def p_value(self) -> float:
        """Two-sided p of "the true value is 0" (1.0 for an exact 0, 0.0 for an exact non-zero)."""
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * stdtr(self.df, -abs(self.mean) / self.se))

    def mde(self, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
        """The minimal detectable effect: the smallest true value a two-sided test at `alpha` finds
        with probability `power`, (t(1 - alpha/2) + t(power)) standard errors. A property of the design
        (persons, seeds, noise), not a bound on the true value: that is what the interval says."""
        return self.se * float(stdtrit(self.df, 1 - alpha / 2) + stdtrit(self.df, power))


def _parts(values: np.ndarray, clusters: Clusters) -> tuple[np.ndarray, float, int, np.ndarray]:
    """(S, Q) one variant's values -> its seed-averaged person means (P,), the seed part of the
    variance of its mean, that part's degrees of freedom, and each person's seed noise (P,) (the
    variance of its seed-averaged mean that comes from seed-to-seed differences)."""
    seeds = values.shape[0]
    person = clusters.means(values)  # (S, P)
    totals = person @ clusters.weights  # (S,) each seed's mean over the queries
    if seeds < 2:
        return person.mean(axis=0), 0.0, 0, np.zeros(person.shape[1])
    noise = (person - totals[:, None]).var(axis=0, ddof=1) / seeds  # (P,)
    return person.mean(axis=0), float(totals.var(ddof=1)) / seeds, seeds - 1, noise


def estimate(values: np.ndarray, clusters: Clusters, reference: np.ndarray | None = None) -> Estimate:
    """The mean of (S, Q) `values` over seeds and queries, or with `reference` (S', Q) on the same
    queries the paired difference values - reference, with its standard error (persons and seeds)."""
    means, seed_var, seed_df, noise = _parts(values, clusters)
    parts = [(seed_var, seed_df)]
    if reference is not None:
        ref_means, ref_var, ref_df, ref_noise = _parts(reference, clusters)
        means, noise = means - ref_means, noise + ref_noise
        parts.append((ref_var, ref_df))
    weights = clusters.weights  # (P,)
    mean = float(weights @ means)
    persons = len(weights)
    if persons > 1:
        spread = persons / (persons - 1) * float(np.sum(weights**2 * (means - mean) ** 2))
        parts.append((max(0.0, spread - float(np.sum(weights**2 * noise))), persons - 1))
    variance = sum(v for v, _ in parts)
    pieces = sum(v**2 / df for v, df in parts if v > 0 and df > 0)
    df = min(MAX_DF, variance**2 / pieces) if pieces > 0 else MAX_DF
    return Estimate(mean, math.sqrt(variance), df)


def difference(runs: PerQueryRuns, reference: PerQueryRuns, metric: str, clusters: Clusters) -> Estimate:
    """`runs` - `reference` in `metric` on the same queries, paired on seeds too when they ran the same
    ones (the module's docstring)."""
    values, base = runs.values[metric], reference.values[metric]
    if runs.pairs_seeds_with(reference):
        return estimate(values - base, clusters)  # (S, Q) one draw of the difference per seed
    return estimate(values, clusters, base)


def compare(
    runs: Mapping[str, PerQueryRuns],
    baseline: str = "global",
    *,
    persons: np.ndarray | None = None,
    level: float = LEVEL,
) -> list[dict[str, object]]:
    """One row per variant (sorted by name): `seeds`, `queries`, `persons`, and for each metric M
    `M_mean`, `M_low`, `M_high`, and `delta_M`, `delta_M_low`, `delta_M_high` against `baseline` (None
    for the baseline itself or when it is absent) and `delta_M_mde` (`Estimate.mde`, the design's
    power figure). Unadjusted: `tasks.report.verdicts` corrects for the family of comparisons.
    `persons` (Q,) labels each query with its person (None: queries are independent)."""
    if not runs:
        return []
    queries = {r.values["R1"].shape[1] for r in runs.values()}
    if len(queries) != 1:
        raise ValueError(f"every variant must have the same queries; got counts {sorted(queries)}")
    clusters = Clusters.of(persons, queries.pop())
    rows: list[dict[str, object]] = []
    for name in sorted(runs):
        row: dict[str, object] = {
            "variant": name,
            "seeds": runs[name].seeds,
            "queries": int(clusters.counts.sum()),
            "persons": len(clusters.counts),
        }
        for metric in METRICS:
            own = estimate(runs[name].values[metric], clusters)
            low, high = own.interval(level, PERCENT)
            row |= {f"{metric}_mean": own.mean, f"{metric}_low": low, f"{metric}_high": high}
            delta: list[float | None] = [None, None, None, None]
            if name != baseline and baseline in runs:
                diff = difference(runs[name], runs[baseline], metric, clusters)
                delta = [diff.mean, *diff.interval(level, DIFFERENCE), diff.mde(1 - level)]
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
    seed: int | None = None  # the training run's seed, when known


@dataclass(frozen=True)
class Comparison:
    """The variants compared together (one pipeline run x scoring job settings) on the queries all
    their jobs share: `keys` the GROUP_COLUMNS values, `runs` by variant, `persons` (Q,) each query's
    person (None: unknown, queries count as independent)."""

    keys: dict[str, object]
    runs: dict[str, PerQueryRuns]
    persons: np.ndarray | None


GROUP_COLUMNS = (
    ("dataset", pa.string()),
    ("parent_run_id", pa.string()),
    ("mode", pa.string()),
    ("top_k", pa.int64()),
    ("index", pa.string()),
    ("candidates", pa.string()),
)
STAT_COLUMNS = [
    ("variant", pa.string()),
    ("seeds", pa.int64()),
    ("queries", pa.int64()),
    ("persons", pa.int64()),
] + [
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


def read_comparisons(
    models: Sequence[ScoredModel], persons: Mapping[int, int] | None = None
) -> list[Comparison]:
    """Every comparison whose per-query files exist, on the queries all its jobs share; `persons` maps
    query (caption) ids to person ids (a query it lacks counts as a person of its own)."""
    groups: dict[tuple[object, ...], dict[str, dict[str, tuple[Path, int | None]]]] = {}
    for m in models:
        path = m.out_dir / PER_QUERY
        if path.is_file():
            groups.setdefault(m.comparison, {}).setdefault(m.variant, {})[m.model] = (path, m.seed)
    found = []
    for comparison, variants in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        tables = {v: [pq.read_table(p) for p, _ in files.values()] for v, files in variants.items()}
        shared = set.intersection(*(set(t["query_id"].to_pylist()) for ts in tables.values() for t in ts))
        if not shared:
            continue
        order = np.array(sorted(shared), dtype=np.int64)
        labels = None
        if persons is not None:  # a query without a person: a negative label of its own
            labels = np.array([persons.get(int(q), -1 - i) for i, q in enumerate(order)], dtype=np.int64)
        keys = dict(zip((name for name, _ in GROUP_COLUMNS), comparison, strict=True))
        runs = {v: _stack(ts, order, [seed for _, seed in variants[v].values()]) for v, ts in tables.items()}
        found.append(Comparison(keys, runs, labels))
    return found


def variant_stats_table(comparisons: Sequence[Comparison], baseline: str = "global") -> pa.Table:
    """`compare` for every comparison, as the warehouse table `variant_stats`."""
    rows = [c.keys | row for c in comparisons for row in compare(c.runs, baseline, persons=c.persons)]
    return pa.Table.from_pylist(rows, schema=VARIANT_STATS_SCHEMA)


def _stack(tables: Sequence[pa.Table], order: np.ndarray, seeds: Sequence[int | None]) -> PerQueryRuns:
    """(S, Q) percent matrices of each metric, the columns in `order` of query ids, the rows by seed
    when every table's seed is known and none repeats (else `seed_ids` is None)."""
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
    known = [s for s in seeds if s is not None]
    if len(known) == len(seeds) and len(set(known)) == len(known):
        rows = sorted(range(len(per_seed)), key=lambda i: known[i])
        return PerQueryRuns(
            {metric: np.stack([per_seed[i][metric] for i in rows]) for metric in METRICS},
            tuple(known[i] for i in rows),
        )
    # seeds in an order fixed by their results, not by their (random) run ids: sums then add up in the
    # same order between two runs of the same job
    per_seed.sort(key=lambda s: tuple(np.concatenate([s[metric] for metric in METRICS]).round(9).tolist()))
    return PerQueryRuns({metric: np.stack([s[metric] for s in per_seed]) for metric in METRICS})
