"""Bootstrap intervals and paired differences against independent computations on hand cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.report.stats import PerQueryRuns, ScoredModel, compare, per_query_percent, variant_stats_table


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


def test_seed_resampling_spans_what_two_seeds_allow() -> None:
    # seed A hits every query, seed B none: a replicate draws AA, AB/BA or BB -> 100, 50, 0 (p = 1/4, 1/2, 1/4)
    hits, misses = np.ones(50, dtype=np.int64), np.full(50, 7)
    (row,) = compare({"x": _runs(hits, misses)}, replicates=4000)
    assert row["R1_mean"] == 50.0 and row["R1_low"] == 0.0 and row["R1_high"] == 100.0


def test_interval_of_one_seed_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(3)
    ranks = np.where(rng.random(3000) < 0.3, 1, 2)
    (row,) = compare({"x": _runs(ranks)}, replicates=2000)
    p = row["R1_mean"] / 100
    half = 1.96 * 100 * np.sqrt(p * (1 - p) / len(ranks))  # independent: the binomial standard error
    assert row["R1_low"] == pytest.approx(row["R1_mean"] - half, abs=0.35)
    assert row["R1_high"] == pytest.approx(row["R1_mean"] + half, abs=0.35)


def test_the_difference_is_paired_on_queries() -> None:
    # x = global plus one extra hit on each of 10% of the queries: every replicate's difference is the
    # share of those queries it drew, so the interval is narrow; unpaired it would be ~2.4x wider
    rng = np.random.default_rng(0)
    base = np.where(rng.random(2000) < 0.5, 1, 3)
    better = base.copy()
    extra = np.flatnonzero(base == 3)[:200]
    better[extra] = 1
    by = {r["variant"]: r for r in compare({"global": _runs(base), "x": _runs(better)}, replicates=2000)}
    half = 1.96 * 100 * np.sqrt(0.1 * 0.9 / 2000)  # binomial error of the 10% share: the paired width
    assert by["x"]["delta_R1"] == pytest.approx(10.0)
    assert by["x"]["delta_R1_high"] - by["x"]["delta_R1_low"] == pytest.approx(2 * half, rel=0.2)


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

    table = variant_stats_table(
        [
            write("global-a", [1, 2, 3], [1, 5, 5]),
            write(
                "x-a", [3, 2, 1, 9], [5, 5, 1, 1]
            ),  # same results in another order, plus a query global lacks
        ]
    )
    rows = {r["variant"]: r for r in table.to_pylist()}
    assert (
        rows["x"]["queries"] == 3
        and rows["x"]["delta_R1"] == 0.0
        and rows["x"]["R1_mean"] == pytest.approx(100 / 3)
    )
    assert rows["x"]["parent_run_id"] == "p" and rows["x"]["mode"] == "exhaustive"
    assert rows["x"]["dataset"] == "synth"


def test_intervals_do_not_depend_on_the_run_ids_of_the_seeds(tmp_path: Path) -> None:
    """Two runs of the same job give the seeds new (random) run ids: the bootstrap must not change."""
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
        return variant_stats_table(models).to_pylist()

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
