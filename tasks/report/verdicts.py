"""Verdicts that hold for the whole family of comparisons a run makes (Holm's step-down correction).

A run compares many variants with one reference; tested each at 5%, one of 8 null variants comes out
"better" or "worse" far more often than 5% of the time. Two families, each corrected on its own:

- `global`, "learned pooling or attention over the mean": every other variant of the run against
  `global` (controls included when trained);
- `gpo`, "attention over learned pooling": every attention variant (all but `global`, `gpo` and the
  controls) against `gpo`, the capacity-matched pooling without content attention.

Holm: sort the family's m p-values; step k (1-based) rejects at alpha / (m - k + 1) if every earlier
step rejected; the adjusted p-value is max over j <= k of (m - j + 1) p_(j), capped at 1. Each row's
adjusted interval is drawn at the level of the step that decided it: rows rejected at step k at
1 - alpha / (m - k + 1); the row where Holm stopped and every row after it at that step's level. So a
row is significant exactly when its adjusted interval excludes zero. The warehouse writes these rows
as table `variant_tests`; `sql/leaderboard.sql` and `sql/variant_vs_*.sql` only read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from tasks.report.stats import DIFFERENCE, GROUP_COLUMNS, Clusters, Comparison, Estimate, difference
from tbpr_models.registry import VARIANTS

ALPHA = 0.05  # family-wise error rate of each family


def is_control(variant: str) -> bool:
    """A calibration control (`control_top_half`, `control_aa`), not a variant to judge."""
    spec = VARIANTS.get(variant)
    return spec is not None and spec.head_cls.control


@dataclass(frozen=True)
class Family:
    reference: str
    question: str
    member: Callable[[str], bool]  # which of a run's variants are compared with `reference`


FAMILIES = (
    Family("global", "learned pooling or attention over the mean", lambda v: v != "global"),
    Family(
        "gpo",
        "attention over learned pooling",
        lambda v: v not in ("global", "gpo") and not is_control(v),
    ),
)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, (m - step) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """The test level of each row's Holm step (see the module's docstring), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [alpha] * m
    stopped: float | None = None
    for step, i in enumerate(order):
        level = alpha / (m - step)
        if stopped is None and p_values[i] >= level:
            stopped = level
        levels[i] = level if stopped is None else stopped
    return levels


def family_rows(
    estimates: Mapping[str, Estimate], alpha: float = ALPHA, metric: str = "R1"
) -> list[dict[str, object]]:
    """One row per compared variant (sorted by name) of one family, from each difference to the
    reference: `delta`, `se`, `df`, unadjusted `low`/`high` (1 - alpha) and `p`, Holm's `p_holm` and
    `holm_low`/`holm_high`, `significant`, `verdict`, and `mde`, the design's power figure: the true
    difference the family's strictest step (alpha / m) detects with 80% power."""
    names = sorted(estimates)
    p_values = [estimates[n].p_value() for n in names]
    adjusted, levels = holm(p_values), holm_levels(p_values, alpha)
    rows = []
    for name, p, p_holm, level in zip(names, p_values, adjusted, levels, strict=True):
        est = estimates[name]
        low, high = est.interval(1 - alpha, DIFFERENCE)
        holm_low, holm_high = est.interval(1 - level, DIFFERENCE)
        significant = p_holm < alpha
        if significant:
            verdict = "better" if est.mean > 0 else "worse"
        else:
            verdict = f"not significant: between {holm_low:+.1f} and {holm_high:+.1f} {metric}"
        rows.append(
            {
                "variant": name,
                "family_size": len(names),
                "delta": est.mean,
                "se": est.se,
                "df": est.df,
                "low": low,
                "high": high,
                "p": p,
                "p_holm": p_holm,
                "holm_low": holm_low,
                "holm_high": holm_high,
                "mde": est.mde(alpha / len(names)),
                "significant": significant,
                "verdict": verdict,
            }
        )
    return rows


TEST_COLUMNS = [
    ("reference", pa.string()),
    ("question", pa.string()),
    ("metric", pa.string()),
    ("variant", pa.string()),
    ("family_size", pa.int64()),
    *((name, pa.float64()) for name in ("delta", "se", "df", "low", "high", "p", "p_holm")),
    *((name, pa.float64()) for name in ("holm_low", "holm_high", "mde")),
    ("significant", pa.bool_()),
    ("verdict", pa.string()),
]
VARIANT_TESTS_SCHEMA = pa.schema([*GROUP_COLUMNS, *TEST_COLUMNS])


def comparison_tests(comparison: Comparison, metric: str = "R1") -> list[dict[str, object]]:
    """Every family's rows (`family_rows`) of one comparison whose reference it holds."""
    runs = comparison.runs
    if not runs:
        return []
    queries = next(iter(runs.values())).values[metric].shape[1]
    clusters = Clusters.of(comparison.persons, queries)
    rows: list[dict[str, object]] = []
    for family in FAMILIES:
        if family.reference not in runs:
            continue
        reference = runs[family.reference]
        estimates = {
            v: difference(r, reference, metric, clusters) for v, r in runs.items() if family.member(v)
        }
        about = {"reference": family.reference, "question": family.question, "metric": metric}
        rows += [comparison.keys | about | row for row in family_rows(estimates, metric=metric)]
    return rows


def variant_tests_table(comparisons: Sequence[Comparison]) -> pa.Table:
    """`comparison_tests` of every comparison: the warehouse table `variant_tests`."""
    rows = [row for c in comparisons for row in comparison_tests(c)]
    return pa.Table.from_pylist(rows, schema=VARIANT_TESTS_SCHEMA)
