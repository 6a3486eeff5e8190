"""The warehouse pairs two variants on seeds when their training runs (a real MLflow store) logged the
same `train.seed`s, `PAIRED_SEEDS` or more; other seeds are compared unpaired."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.report.stats import PAIRED_SEEDS, Clusters, estimate
from tasks.report.warehouse import sync

QUERIES = 300


def _write_data(data: Path) -> np.ndarray:
    """150 persons x 2 captions, one image each; returns each query's person."""
    data.mkdir(parents=True)
    persons = np.arange(QUERIES) // 2
    pq.write_table(
        pa.table(
            {
                "caption_id": pa.array(np.arange(QUERIES), pa.int64()),
                "image_id": pa.array(1000 + persons, pa.int64()),
                "person_id": pa.array(persons, pa.int64()),
                "split": ["test"] * QUERIES,
                "text": [f"caption {q}" for q in range(QUERIES)],
            }
        ),
        data / "captions.parquet",
    )
    return persons


def _store(root: Path, seeds: dict[str, list[int]], hits: dict[tuple[str, int], np.ndarray]) -> Path:
    """An MLflow store of one pipeline run: per variant and seed a training run (param `train.seed`)
    and an exhaustive scoring job whose per-query R1 is `hits`."""
    import mlflow

    db = root / "mlflow.db"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    experiment = mlflow.create_experiment("tbpr/synth", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment, run_name="pipeline"):
        for variant, variant_seeds in seeds.items():
            for seed in variant_seeds:
                with mlflow.start_run(experiment_id=experiment, nested=True) as train:
                    mlflow.set_tags({"variant": variant, "stage": "train", "dataset": "synth"})
                    mlflow.log_params({"train.seed": seed})
                out = root / "runs" / f"{variant}-seed{seed}" / "exhaustive"
                out.mkdir(parents=True)
                rank = np.where(hits[(variant, seed)], 1, 2)
                pq.write_table(
                    pa.table(
                        {
                            "query_id": np.arange(QUERIES),
                            "first_match_rank": rank,
                            "ap": 1.0 / rank,
                            "inp": 1.0 / rank,
                        }
                    ),
                    out / "per_query.parquet",
                )
                pq.write_table(
                    pa.table(
                        {
                            "query_id": np.arange(QUERIES),
                            "rank": np.ones(QUERIES, np.int32),
                            "image_id": np.arange(QUERIES),
                            "score": np.ones(QUERIES, np.float32),
                        }
                    ),
                    out / "rankings.parquet",
                )
                with mlflow.start_run(experiment_id=experiment, nested=True) as run:
                    mlflow.set_tags({"variant": variant, "stage": "score", "dataset": "synth"})
                    mlflow.log_params(
                        {"mode": "exhaustive", "out_dir": str(out), "model_run_id": train.info.run_id}
                    )
                    (out / "metrics.json").write_text(json.dumps({"scoring_run_id": run.info.run_id}))
    return db


@pytest.mark.parametrize("other_seeds", [False, True])
def test_the_warehouse_pairs_variants_that_ran_the_same_seeds(tmp_path: Path, other_seeds: bool) -> None:
    rng = np.random.default_rng(3)
    persons = _write_data(tmp_path / "data")
    base = rng.random(QUERIES) < 0.3
    seeds = {"global": list(range(PAIRED_SEEDS))}
    seeds["spatial"] = [s + 10 * other_seeds for s in seeds["global"]]
    hits = {}
    for i in range(PAIRED_SEEDS):  # seed i lifts both variants alike; spatial hits 20 more queries
        shared = base | (rng.random(QUERIES) < 0.1 * i)
        hits[("global", seeds["global"][i])] = shared
        hits[("spatial", seeds["spatial"][i])] = shared | (np.arange(QUERIES) < 20)
    db = _store(tmp_path, seeds, hits)
    warehouse = tmp_path / "warehouse.duckdb"
    sync(db, warehouse, str(tmp_path / "runs" / "**" / "rankings.parquet"), [tmp_path / "data"])
    con = duckdb.connect(str(warehouse), read_only=True)
    ((se, delta),) = con.sql(
        "SELECT se, delta FROM variant_tests WHERE reference = 'global' AND variant = 'spatial'"
    ).fetchall()
    con.close()
    # independently of the warehouse: the (S, Q) matrices in seed order, paired or not
    spatial = np.stack([100.0 * hits[("spatial", s)] for s in seeds["spatial"]])
    reference = np.stack([100.0 * hits[("global", s)] for s in seeds["global"]])
    clusters = Clusters.of(persons, QUERIES)
    paired, unpaired = estimate(spatial - reference, clusters), estimate(spatial, clusters, reference)
    assert delta == pytest.approx(paired.mean) and paired.se < unpaired.se / 2
    assert se == pytest.approx(unpaired.se if other_seeds else paired.se)
