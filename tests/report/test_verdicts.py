"""Holm's correction, its adjusted intervals and the two families, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.report.stats import Comparison, Estimate, PerQueryRuns
from tasks.report.verdicts import comparison_tests, family_rows, holm, holm_levels


def test_holm_adjusts_by_hand() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == [1.0, 1.0] and holm([]) == []


def test_holm_stops_at_the_first_step_that_fails() -> None:
    # two at 0.03 and 0.04: step 1 needs 0.025, so neither is significant, though 0.04 < 0.05 alone
    rows = {
        r["variant"]: r for r in family_rows({"a": Estimate(2.17, 1.0, 1e9), "b": Estimate(2.05, 1.0, 1e9)})
    }
    assert rows["a"]["p"] == pytest.approx(0.030, abs=1e-3) and rows["b"]["p"] == pytest.approx(
        0.040, abs=1e-3
    )
    assert not rows["a"]["significant"] and not rows["b"]["significant"]
    assert holm_levels([rows["a"]["p"], rows["b"]["p"]]) == [0.025, 0.025]
    for row in rows.values():  # both intervals at the stopping step's level (97.5%) hold zero
        assert row["holm_low"] < 0 < row["holm_high"] and row["low"] > 0  # unadjusted: above zero
        assert row["holm_high"] - row["delta"] == pytest.approx(2.241403, rel=1e-5)  # z(1 - 0.025 / 2)
        assert (
            row["verdict"]
            == f"not significant: between {row['holm_low']:+.1f} and {row['holm_high']:+.1f} R1"
        )


def test_significant_exactly_when_the_adjusted_interval_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 9))
        estimates = {
            f"v{i}": Estimate(float(rng.normal(0, 3)), float(rng.uniform(0.5, 2)), float(rng.uniform(2, 50)))
            for i in range(m)
        }
        for row in family_rows(estimates):
            excludes = row["holm_low"] > 0 or row["holm_high"] < 0
            assert row["significant"] == excludes == (row["p_holm"] < 0.05), row
            assert row["holm_high"] - row["holm_low"] >= row["high"] - row["low"] - 1e-9  # never narrower
            if row["significant"]:
                assert row["verdict"] == ("better" if row["delta"] > 0 else "worse")


def test_the_two_families_and_who_is_in_them() -> None:
    rng = np.random.default_rng(1)
    names = ["global", "gpo", "spatial", "cross_scan", "control_aa", "control_top_half"]
    runs = {n: PerQueryRuns({"R1": 100.0 * (rng.random((2, 40)) < 0.3)}) for n in names}
    rows = comparison_tests(Comparison({"parent_run_id": "p"}, runs, np.repeat(np.arange(20), 2)))
    family = {ref: sorted(r["variant"] for r in rows if r["reference"] == ref) for ref in ("global", "gpo")}
    assert family["global"] == sorted(set(names) - {"global"})  # controls are held to the same standard
    assert family["gpo"] == ["cross_scan", "spatial"]  # attention variants only
    assert {r["family_size"] for r in rows if r["reference"] == "gpo"} == {2}
    assert all(r["parent_run_id"] == "p" and r["metric"] == "R1" for r in rows)
    without_gpo = comparison_tests(Comparison({}, {n: runs[n] for n in ("global", "spatial")}, None))
    assert [(r["reference"], r["variant"]) for r in without_gpo] == [("global", "spatial")]
