"""The frontier plot reads cost_frontier's counted cost; a job without counts has no place on the axis."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tasks.report.frontier import frontier_plot, frontier_points
from tasks.report.queries import QueryResult

COLUMNS = ["job", "R1", "R1_95", "mAP", "mAP_95", "gflops_per_query", "gflops_at_cuhk_pedes"]
COLUMNS += ["s_per_1k_queries", "pairs_per_query", "pareto", "seeds"]


def test_points_take_the_counted_cost_and_skip_jobs_without_counts(tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [
        ("global exhaustive", 20.0, "15.0..25.0", 30.0, None, 1.03, 1.2, 0.2, 312.0, True, 3),
        ("global -> cross_scan k20", 24.0, None, 31.0, None, 2.07, 2.1, 0.6, 20.0, True, 3),
        ("global blip_itm k20", 30.0, None, 35.0, None, None, None, 9.0, 20.0, None, 3),
    ]
    result = QueryResult("cost_frontier", "", COLUMNS, rows, len(rows))
    points = frontier_points(result)
    assert [(p.label, p.gflops_per_query, p.pareto) for p in points] == [
        ("global exhaustive", 1.03, True),
        ("global -> cross_scan k20", 2.07, True),
    ]
    assert (points[0].low, points[0].high, points[1].low) == (15.0, 25.0, None)
    out = frontier_plot(points, tmp_path / "frontier.png")
    assert Image.open(out).size[0] > 0
