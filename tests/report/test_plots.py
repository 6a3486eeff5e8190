"""Pictures: the CMC from stored rankings agrees with tbpr_models' CMC; heat maps come from the head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tasks.report.plots import CostPoint, attention_maps, cmc_from_rankings, cmc_plot, cost_plot, region_grid
from tbpr_models.metrics import cmc_curve


def _emb_with_rankings(tmp_path: Path, seed: int) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    query_pids, gallery_pids = rng.integers(0, 5, 12), np.arange(15) % 5
    similarity = rng.normal(size=(12, 15))
    emb = tmp_path / f"emb{seed}"
    emb.mkdir()
    pq.write_table(
        pa.table({"caption_id": np.arange(12) + 100, "person_id": query_pids}), emb / "queries.parquet"
    )
    pq.write_table(
        pa.table({"image_id": np.arange(15) + 500, "person_id": gallery_pids}), emb / "gallery.parquet"
    )
    order = np.argsort(-similarity, axis=1, kind="stable")  # (Q, G)
    pq.write_table(
        pa.table(
            {
                "query_id": np.repeat(np.arange(12) + 100, 15),
                "rank": np.tile(np.arange(1, 16), 12),
                "image_id": (order + 500).reshape(-1),
            }
        ),
        emb / "rankings.parquet",
    )
    return emb, similarity, query_pids, gallery_pids


def test_cmc_from_rankings_matches_the_metric(tmp_path: Path) -> None:
    for seed in range(3):
        emb, similarity, query_pids, gallery_pids = _emb_with_rankings(tmp_path, seed)
        expected = cmc_curve(similarity, query_pids, gallery_pids, max_rank=10)
        np.testing.assert_allclose(cmc_from_rankings(emb / "rankings.parquet", emb, max_rank=10), expected)


def test_heat_maps_come_from_the_head_and_only_where_it_has_attention(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    scan = attention_maps(tiny_emb("cross_scan"), tmp_path / "scan", queries=2)
    assert len(scan) == 2 and all(Image.open(path).size[0] > 0 for path in scan)
    assert attention_maps(tiny_emb("global"), tmp_path / "global", queries=2) == []  # no attention, no map
    assert not (tmp_path / "global").exists()


def test_region_grid_follows_the_image_aspect() -> None:
    assert region_grid(48, 192, 64) == (12, 4)
    assert region_grid(24, 64, 64) in {(4, 6), (6, 4)}
    assert region_grid(7, 100, 10) == (7, 1)


def test_plots_are_written_as_images(tmp_path: Path) -> None:
    emb, *_ = _emb_with_rankings(tmp_path, 0)
    cmc = cmc_plot({"global": (emb, emb)}, tmp_path / "p" / "cmc.png", max_rank=5)
    cost = cost_plot(
        [CostPoint("global", "exhaustive", 40.0, 2.0), CostPoint("global", "pruned-k5-flat", 38.0, 0.5)],
        tmp_path / "p" / "cost.png",
    )
    for path in (cmc, cost):
        assert Image.open(path).size[0] > 100
