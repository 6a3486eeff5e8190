"""The verdict is calibrated: in null runs shaped like the main job (8 variants from one distribution,
100 test persons x 6 queries, 3 seeds, a seed-to-seed spread of R1 of about 1.7 points, part of it
shared by every variant trained with the same seed), Holm's verdicts of both families call something
better or worse in at most 5% of runs (+-2%), and the unadjusted 95% intervals cover the true
difference (0) in 93-97% of comparisons: with 3 seeds (the main job; compared unpaired, whether their
seeds are known or not) and with 5 seeds every variant ran (compared paired on seeds,
`tasks.report.stats.PAIRED_SEEDS`). It calls
`tasks.report.verdicts.comparison_tests`, the function whose rows the warehouse writes into
`variant_tests` (what the leaderboard and `variant_vs_*.sql` print)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.report.stats import PAIRED_SEEDS, Comparison, PerQueryRuns
from tasks.report.verdicts import comparison_tests

VARIANTS = ("global", "gpo", "spatial", "channel", "mixed", "nonlocal", "cross_scan", "hard_topk")
PERSONS, QUERIES_PER_PERSON, SEEDS = 100, 6, 3
REPLICATES = 600


BASE, PERSON_SD, CAPTION_SD, AFFINITY_SD, CAPTION_AFFINITY_SD, SEED_SD = -2.0, 1.0, 0.8, 0.4, 0.6, 0.08
SHARED_SEED_SD = 0.08  # what a seed does to every variant alike (the main job: about half the seed spread)


def simulated_run(
    rng: np.random.Generator,
    shifts: dict[str, float] | None = None,
    seeds: int = SEEDS,
    known: bool = True,
) -> dict[str, PerQueryRuns]:
    """Per-query R1 (0 or 100) of every variant x seed. A query's hit: a logit of the person's
    difficulty, the caption's, each variant's own affinity for the person and for the caption (kept
    across its seeds), each seed's overall shift (one part shared by every variant of that seed, one
    its own), and logistic noise per model and query. Without `shifts` (logits added to a variant)
    every variant has the same distribution: every true difference is 0. `known`: the runs say which
    seed each row is (0..S-1, the same for every variant); else their seeds are unknown."""
    person = np.repeat(rng.normal(0, PERSON_SD, PERSONS), QUERIES_PER_PERSON)  # (Q,)
    caption = rng.normal(0, CAPTION_SD, PERSONS * QUERIES_PER_PERSON)  # (Q,)
    shared = rng.normal(0, SHARED_SEED_SD, (seeds, 1))  # (S, 1) every variant's seed s alike
    seed_ids = tuple(range(seeds)) if known else None
    runs = {}
    for name in VARIANTS:
        affinity = np.repeat(rng.normal(0, AFFINITY_SD, PERSONS), QUERIES_PER_PERSON)  # variant x person
        affinity += rng.normal(0, CAPTION_AFFINITY_SD, len(caption))  # variant x caption
        seed_shift = shared + rng.normal(0, SEED_SD, (seeds, 1))  # (S, 1)
        logit = BASE + (shifts or {}).get(name, 0.0) + person + caption + affinity + seed_shift  # (S, Q)
        hits = rng.logistic(size=logit.shape) < logit
        runs[name] = PerQueryRuns({"R1": 100.0 * hits}, seed_ids)
    return runs


@pytest.mark.parametrize(("seeds", "known"), [(SEEDS, True), (SEEDS, False), (PAIRED_SEEDS, True)])
def test_null_runs_shaped_like_the_main_job(seeds: int, known: bool) -> None:
    rng = np.random.default_rng(2026)
    persons = np.repeat(np.arange(PERSONS), QUERIES_PER_PERSON)
    false_alarm = {"global": 0, "gpo": 0}
    covered = compared = 0
    seed_sd, r1 = [], []
    for replicate in range(REPLICATES):
        runs = simulated_run(rng, seeds=seeds, known=known)
        assert runs["spatial"].pairs_seeds_with(runs["global"]) == (known and seeds >= PAIRED_SEEDS)
        rows = comparison_tests(Comparison({"parent_run_id": str(replicate)}, runs, persons))
        for reference in false_alarm:
            family = [r for r in rows if r["reference"] == reference]
            assert len(family) == (7 if reference == "global" else 6)
            false_alarm[reference] += any(r["significant"] for r in family)
        covered += sum(r["low"] <= 0.0 <= r["high"] for r in rows)
        compared += len(rows)
        seed_sd += [float(r.values["R1"].mean(axis=1).std(ddof=1)) for r in runs.values()]
        r1 += [float(r.values["R1"].mean()) for r in runs.values()]
    # shaped like the main job: R1 about 15-20%, seed-to-seed SD of R1 about 1.6-1.9 points
    assert 12 < np.mean(r1) < 22 and 1.4 < np.sqrt(np.mean(np.square(seed_sd))) < 2.1
    for reference, alarms in false_alarm.items():
        assert alarms / REPLICATES <= 0.07, (reference, alarms / REPLICATES)
    assert 0.93 <= covered / compared <= 0.97, covered / compared


@pytest.mark.parametrize("seeds", [SEEDS, PAIRED_SEEDS])
def test_a_real_difference_is_covered_and_found(seeds: int) -> None:
    """`spatial` truly better by 0.8 logits (about +11 R1): its interval covers the true difference (the
    population's, from a large sample) in 93-97% of runs, and Holm finds it in most."""
    rng = np.random.default_rng(7)
    persons = np.repeat(np.arange(PERSONS), QUERIES_PER_PERSON)
    shift = 0.8
    spread = np.sqrt(
        PERSON_SD**2
        + CAPTION_SD**2
        + AFFINITY_SD**2
        + CAPTION_AFFINITY_SD**2
        + SEED_SD**2
        + SHARED_SEED_SD**2
    )
    logit = BASE + rng.normal(0, spread, 2_000_000)
    # P(logistic noise < logit) = sigmoid(logit): the population's R1 with and without the shift
    truth = 100 * float(np.mean(1 / (1 + np.exp(-(logit + shift))) - 1 / (1 + np.exp(-logit))))
    covered = found = 0
    replicates = 300
    for replicate in range(replicates):
        runs = simulated_run(rng, {"spatial": shift}, seeds)
        rows = comparison_tests(Comparison({"parent_run_id": str(replicate)}, runs, persons))
        (row,) = [r for r in rows if r["reference"] == "global" and r["variant"] == "spatial"]
        covered += row["low"] <= truth <= row["high"]
        found += row["significant"] and row["verdict"] == "better"
    assert 0.93 <= covered / replicates <= 0.97 and found / replicates > 0.5
