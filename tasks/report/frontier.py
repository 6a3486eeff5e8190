"""The cost-accuracy frontier: every scoring job of the latest run (`sql/cost_frontier.sql`), single
models and cascades, as R1 against the counted work per query (GFLOPs: query encoding by every model the
job runs, first stage, pair scoring; `tasks/score/cost.py`), the Pareto-optimal ones joined by a line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from tasks.report.plots import save_figure
from tasks.report.queries import SQL_DIR, QueryResult, run_query

FRONTIER_PNG = "cost_frontier.png"
FRONTIER_SQL = SQL_DIR / "cost_frontier.sql"


@dataclass(frozen=True)
class FrontierPoint:
    label: str  # the job, e.g. "cross_scan exhaustive", "global -> cross_scan k20"
    R1: float
    low: float | None  # 95% interval of R1 (None without per-query results)
    high: float | None
    gflops_per_query: float
    pareto: bool


def cost_frontier(warehouse: Path) -> QueryResult:
    """The rows of `sql/cost_frontier.sql` against `warehouse`."""
    return run_query(warehouse, FRONTIER_SQL)


def frontier_points(result: QueryResult) -> list[FrontierPoint]:
    """One point per row of `cost_frontier` with a counted cost (its `R1_95` reads "low..high")."""
    points = []
    for values in result.rows:
        row = dict(zip(result.columns, values, strict=True))
        if (
            row["gflops_per_query"] is None
        ):  # no counts recorded (an external re-ranker): no place on the axis
            continue
        interval = [float(x) for x in str(row["R1_95"]).split("..")] if row["R1_95"] else [None, None]
        points.append(
            FrontierPoint(
                label=str(row["job"]),
                R1=float(row["R1"]),  # type: ignore[arg-type]
                low=interval[0],
                high=interval[1],
                gflops_per_query=float(row["gflops_per_query"]),  # type: ignore[arg-type]
                pareto=bool(row["pareto"]),
            )
        )
    return points


def frontier_plot(points: list[FrontierPoint], out: Path) -> Path:
    """R1 (with its 95% interval) against GFLOPs per query on a log scale; the Pareto set in red, joined
    by a step line, every point labelled."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for point in points:
        color = "tab:red" if point.pareto else "tab:gray"
        error = None
        if point.low is not None and point.high is not None:
            error = [[max(0.0, point.R1 - point.low)], [max(0.0, point.high - point.R1)]]
        ax.errorbar(
            point.gflops_per_query, point.R1, yerr=error, fmt="o", color=color, ms=4, lw=0.8, alpha=0.6
        )
        ax.annotate(
            point.label,
            (point.gflops_per_query, point.R1),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    front = sorted((p for p in points if p.pareto), key=lambda p: p.gflops_per_query)
    if front:
        ax.step(
            [p.gflops_per_query for p in front],
            [p.R1 for p in front],
            where="post",
            color="tab:red",
            label="Pareto frontier",
        )
        ax.legend(fontsize="small", loc="lower right")
    ax.set(
        xscale="log",
        xlabel="GFLOPs per query: query encoding + first stage + pair scoring (counted; log)",
        ylabel="R1 (%), mean over seeds, 95% interval",
        title="Cost-accuracy frontier: single models and cascades",
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def draw_frontier(warehouse: Path, out: Path) -> Path:
    """`cost_frontier` of `warehouse` drawn into `out` (`frontier_plot`)."""
    return frontier_plot(frontier_points(cost_frontier(warehouse)), out)
