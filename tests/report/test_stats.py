"""Intervals over persons and seeds, and paired differences, against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.report.stats import (
    PAIRED_SEEDS,
    Clusters,
    PerQueryRuns,
    ScoredModel,
    compare,
    difference,
    estimate,
    per_query_percent,
    read_comparisons,
    variant_stats_table,
)


def _runs(*seeds: np.ndarray) -> PerQueryRuns:
    """Seeds of per-query first-match ranks (AP = INP = 1 / rank: one positive per query)."""
    stacked = [per_query_percent(r, 1.0 / r, 1.0 / r) for r in seeds]
    return PerQueryRuns({m: np.stack([s[m] for s in stacked]) for m in ("R1", "mAP", "mINP")})


def test_means_are_over_seeds_and_queries_and_match_a_hand_count() -> None:
    rows = compare(
        {"global": _runs(np.array([1, 2, 1, 4])), "x": _runs(np.array([1, 1, 1, 3]), np.array([2, 1, 1, 1]))}
    )
    by = {r["variant"]: r for r in rows}
    assert by["global"]["R1_mean"] == 50.0 and by["x"]["R1_mean"] == 75.0  # (3 + 3) / 8 hits
    assert by["x"]["mAP_mean"] == pytest.approx(100 * np.mean([1, 1, 1, 1 / 3, 1 / 2, 1, 1, 1]))
    assert by["x"]["delta_R1"] == 25.0 and by["global"]["delta_R1"] is None and by["x"]["seeds"] == 2


def test_one_seed_of_independent_queries_is_the_t_interval_of_their_values() -> None:
    rng = np.random.default_rng(3)
    ranks = np.where(rng.random(300) < 0.3, 1, 2)
    (row,) = compare({"x": _runs(ranks)})
    hits = 100.0 * (ranks == 1)
    se = hits.std(ddof=1) / np.sqrt(len(hits))  # independent: the textbook standard error of a mean
    half = 1.967903 * se  # t(0.975, 299 degrees of freedom)
    assert row["R1_low"] == pytest.approx(hits.mean() - half, rel=1e-5)
    assert row["R1_high"] == pytest.approx(hits.mean() + half, rel=1e-5)


def test_the_difference_is_paired_on_queries() -> None:
    # x = global plus one extra hit on 10% of the queries: the per-query differences are 0 or 100, and
    # the interval is theirs (unpaired it would be ~2.4x wider)
    rng = np.random.default_rng(0)
    base = np.where(rng.random(2000) < 0.5, 1, 3)
    better = base.copy()
    better[np.flatnonzero(base == 3)[:200]] = 1
    by = {r["variant"]: r for r in compare({"global": _runs(base), "x": _runs(better)})}
    diff = 100.0 * ((better == 1).astype(float) - (base == 1))
    half = 1.961151 * diff.std(ddof=1) / np.sqrt(len(diff))  # t(0.975, 1999)
    assert by["x"]["delta_R1"] == pytest.approx(10.0)
    assert by["x"]["delta_R1_high"] - by["x"]["delta_R1_low"] == pytest.approx(2 * half, rel=1e-5)
    # the MDE: (t(0.975) + t(0.8)) standard errors, the design's power figure
    assert by["x"]["delta_R1_mde"] == pytest.approx((1.961151 + 0.841651) * half / 1.961151, rel=1e-4)


def test_two_seeds_that_disagree_everywhere_are_all_seed_variance() -> None:
    # seed A hits every query, seed B none: every person's seed-averaged mean is 50 (no person spread);
    # the seed means 100 and 0 give variance 5000 / 2 seeds, one degree of freedom
    hits, misses = np.ones(50, dtype=np.int64), np.full(50, 7)
    est = estimate(_runs(hits, misses).values["R1"], Clusters.of(None, 50))
    assert (est.mean, est.se, est.df) == (50.0, 50.0, 1.0)
    assert est.interval()[1] == pytest.approx(50.0 + 12.706205 * 50.0)  # t(0.975, 1)
    (row,) = compare({"x": _runs(hits, misses)})
    assert (row["R1_low"], row["R1_high"]) == (0.0, 100.0)  # a percentage: clipped to what it can be


def test_persons_are_clusters_a_copied_caption_adds_no_information() -> None:
    rng = np.random.default_rng(4)
    a = _runs(np.where(rng.random(60) < 0.4, 1, 2)).values["R1"]  # one seed each: persons only
    b = _runs(np.where(rng.random(60) < 0.5, 1, 2)).values["R1"]
    once = estimate(a, Clusters.of(np.arange(60), 60), b)
    tripled = np.repeat(a, 3, axis=1), np.repeat(b, 3, axis=1)  # each query three times, one person
    persons = np.repeat(np.arange(60), 3)
    clustered = estimate(tripled[0], Clusters.of(persons, 180), tripled[1])
    assert clustered.mean == pytest.approx(once.mean) and clustered.se == pytest.approx(once.se)
    naive = estimate(tripled[0], Clusters.of(None, 180), tripled[1])  # copies taken as independent
    assert naive.se == pytest.approx(once.se * np.sqrt(59 / 179))  # ~1/sqrt(3): too sure


def test_the_variance_is_seed_part_plus_person_part_by_hand() -> None:
    """Against a loop over persons and seeds written from the model's formula (stats' docstring)."""
    rng = np.random.default_rng(7)
    persons = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5])
    a, b = rng.random((3, 10)) * 100, rng.random((2, 10)) * 100
    weight = {p: np.mean(persons == p) for p in set(persons.tolist())}

    def person_means(values: np.ndarray) -> dict[int, np.ndarray]:
        return {p: values[:, persons == p].mean(axis=1) for p in weight}  # (S,) per person

    seed_var, noise, diffs = 0.0, {p: 0.0 for p in weight}, dict.fromkeys(weight, 0.0)
    for values, sign in ((a, 1), (b, -1)):
        means, s = person_means(values), len(values)
        totals = sum(weight[p] * means[p] for p in weight)  # (S,)
        seed_var += np.var(totals, ddof=1) / s
        for p in weight:
            noise[p] += np.var(means[p] - totals, ddof=1) / s
            diffs[p] += sign * means[p].mean()
    mean = sum(weight[p] * diffs[p] for p in weight)
    n = len(weight)
    spread = n / (n - 1) * sum(weight[p] ** 2 * (diffs[p] - mean) ** 2 for p in weight)
    person_var = max(0.0, spread - sum(weight[p] ** 2 * noise[p] for p in weight))
    est = estimate(a, Clusters.of(persons, 10), b)
    assert est.mean == pytest.approx(mean)
    assert est.se == pytest.approx(np.sqrt(seed_var + person_var))


def test_table_aligns_queries_by_id_across_files(tmp_path: Path) -> None:
    def write(name: str, ids: list[int], ranks: list[int]) -> ScoredModel:
        out = tmp_path / name
        out.mkdir()
        r = np.array(ranks)
        pq.write_table(
            pa.table({"query_id": ids, "first_match_rank": r, "ap": 1.0 / r, "inp": 1.0 / r}),
            out / "per_query.parquet",
        )
        return ScoredModel(("synth", "p", "exhaustive", None, None, None), name.split("-")[0], name, out)

    models = [
        write("global-a", [1, 2, 3], [1, 5, 5]),
        write("x-a", [3, 2, 1, 9], [5, 5, 1, 1]),  # same results in another order, plus a query global lacks
    ]
    table = variant_stats_table(read_comparisons(models, {1: 10, 2: 10}))  # query 3: no person known
    rows = {r["variant"]: r for r in table.to_pylist()}
    assert (
        rows["x"]["queries"] == 3
        and rows["x"]["delta_R1"] == 0.0
        and rows["x"]["R1_mean"] == pytest.approx(100 / 3)
    )
    assert rows["x"]["parent_run_id"] == "p" and rows["x"]["mode"] == "exhaustive"
    assert rows["x"]["dataset"] == "synth" and rows["x"]["persons"] == 2  # {1, 2} and {3}


def test_intervals_do_not_depend_on_the_run_ids_of_the_seeds(tmp_path: Path) -> None:
    """Two runs of the same job give the seeds new (random) run ids: the numbers must not change."""
    rng = np.random.default_rng(0)
    ranks = {f"{v}-{s}": rng.integers(1, 6, 40).tolist() for v in ("global", "x") for s in range(3)}

    def table(ids: dict[str, str]) -> list[dict[str, object]]:
        models = []
        for name, r in ranks.items():
            out = tmp_path / ids[name]
            out.mkdir(exist_ok=True)
            rank = np.array(r)
            pq.write_table(
                pa.table(
                    {
                        "query_id": list(range(40)),
                        "first_match_rank": rank,
                        "ap": 1.0 / rank,
                        "inp": 1.0 / rank,
                    }
                ),
                out / "per_query.parquet",
            )
            models.append(
                ScoredModel(
                    ("synth", "p", "exhaustive", None, None, None), name.split("-")[0], ids[name], out
                )
            )
        return variant_stats_table(read_comparisons(models)).to_pylist()

    first = table({name: f"run-{i}" for i, name in enumerate(ranks)})
    again = table(
        {name: f"run-{99 - i}" for i, name in enumerate(ranks)}
    )  # the seeds' ids sort the other way
    assert first == again


def test_adding_a_variant_leaves_the_others_intervals_alone() -> None:
    rng = np.random.default_rng(5)
    a = _runs(*(np.where(rng.random(40) < 0.5, 1, 2) for _ in range(3)))
    b = _runs(*(np.where(rng.random(40) < 0.5, 1, 2) for _ in range(2)))
    alone = {r["variant"]: r for r in compare({"global": a})}
    both = {r["variant"]: r for r in compare({"global": a, "aaa_first_by_name": b})}
    assert (alone["global"]["R1_low"], alone["global"]["R1_high"]) == (
        both["global"]["R1_low"],
        both["global"]["R1_high"],
    )


def _seeded(values: np.ndarray, seeds: tuple[int, ...] | None) -> PerQueryRuns:
    return PerQueryRuns({"R1": values}, seeds)


def test_five_shared_seeds_pair_and_what_a_seed_does_to_both_variants_cancels() -> None:
    """Seed s makes both variants hit a block of extra queries (a large seed effect, shared); x is
    global but for 30 queries it always misses. Paired on seeds, each seed's difference is the same
    (S, Q) row: the interval is the textbook one of those per-query differences; unpaired, the seed
    effect counts twice."""
    rng = np.random.default_rng(11)
    queries, seeds = 400, PAIRED_SEEDS
    base = rng.random(queries) < 0.3
    lost = np.flatnonzero(base)[:30]
    ref, var = np.zeros((seeds, queries)), np.zeros((seeds, queries))
    for s in range(seeds):
        hits = base.copy()
        hits[rng.choice(queries, 40 * s, replace=False)] = True  # the seed's shared effect
        hits[lost] = True
        ref[s] = 100.0 * hits
        hits[lost] = False
        var[s] = 100.0 * hits
    clusters = Clusters.of(None, queries)
    ids = tuple(range(seeds))
    paired = difference(_seeded(var, ids), _seeded(ref, ids), "R1", clusters)
    per_query = (var - ref)[0]  # every seed's row
    assert paired.mean == pytest.approx(per_query.mean())
    assert paired.se == pytest.approx(per_query.std(ddof=1) / np.sqrt(queries))
    unpaired = estimate(var, clusters, ref)
    assert unpaired.mean == pytest.approx(paired.mean) and unpaired.se > 3 * paired.se
    for other in (None, tuple(range(5, 5 + seeds))):  # seeds unknown, or other seeds: unpaired
        got = difference(_seeded(var, ids), _seeded(ref, other), "R1", clusters)
        assert (got.mean, got.se, got.df) == (unpaired.mean, unpaired.se, unpaired.df)
    few = tuple(range(PAIRED_SEEDS - 1))  # fewer seeds than PAIRED_SEEDS: unpaired too
    got = difference(_seeded(var[:-1], few), _seeded(ref[:-1], few), "R1", clusters)
    assert got.se == estimate(var[:-1], clusters, ref[:-1]).se


def test_files_are_stacked_by_seed_when_every_seed_is_known_once(tmp_path: Path) -> None:
    def write(name: str, rank: int) -> Path:
        out = tmp_path / name
        out.mkdir()
        r = np.full(4, rank)
        pq.write_table(
            pa.table({"query_id": [1, 2, 3, 4], "first_match_rank": r, "ap": 1.0 / r, "inp": 1.0 / r}),
            out / "per_query.parquet",
        )
        return out

    key = ("synth", "p", "exhaustive", None, None, None)
    seeds = {"x-a": (7, 1), "x-b": (2, 2), "x-c": (5, 1)}  # run id -> (seed, first-match rank)
    models = [ScoredModel(key, "x", run, write(run, rank), seed) for run, (seed, rank) in seeds.items()]
    (comparison,) = read_comparisons(models)
    runs = comparison.runs["x"]
    assert runs.seed_ids == (2, 5, 7)
    assert runs.values["R1"][:, 0].tolist() == [0.0, 100.0, 100.0]  # rows in seed order
    repeated = [ScoredModel(key, "x", m.model, m.out_dir, 2) for m in models]  # one seed twice: unknown
    assert read_comparisons(repeated)[0].runs["x"].seed_ids is None
    partly = [*models[:2], ScoredModel(key, "x", "x-c", models[2].out_dir, None)]
    assert read_comparisons(partly)[0].runs["x"].seed_ids is None
