"""The pipeline's open-set figures: each trained model embeds val too (heads only, from the feature
cache), places its "no confident match" threshold there at the configured false-alarm rate and is
measured on test with each query's person removed from the gallery and present (`tasks.report.open_set`):
one row per model in RUN_DIR/open_set/<model>.parquet (the warehouse's `open_set` table) and the
trade-off curve per variant in RUN_DIR/plots/open_set.png. Each val EMB is scratch, removed once
its model is measured.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from flows.config import PipelineConfig
from flows.prefect_tasks import embed_task, log_files_task, open_set_plot_task, open_set_task
from tasks.core.errors import TbprError
from tasks.embed.layout import EmbedInfo
from tasks.report.open_set import OPEN_SET_DIR, OPEN_SET_PNG, OpenSetMeasure, write_measure
from tasks.train.result import TrainResult

log = logging.getLogger(__name__)


def measure_open_set(
    config: PipelineConfig,
    data: Path,
    dataset: str | None,
    trained: Mapping[str, TrainResult],
    embs: Mapping[str, Path],
    run_dir: Path,
    parent_run_id: str,
) -> list[Path]:
    """Open-set figures of every model embedded for test (`embs`: model name -> test EMB); the files
    written. A model whose splits cannot place a threshold (too few val queries) is named and skipped."""
    if not config.open_set.enabled or not embs:
        return []
    seeds = {name: seed for name, _, seed in config.train.models()}
    by_variant: dict[str, list[OpenSetMeasure]] = {}
    written = []
    for name, test_emb in embs.items():
        result = trained[name]
        val_emb = run_dir / "emb_val" / name
        embed_task(
            data,
            Path(EmbedInfo.read(test_emb).checkpoint),  # the very weights that embedded test
            val_emb,
            split="val",
            batch_size=config.embed.batch_size,
            device=config.embed.device,
            precision=config.embed.precision,
            local_dtype=config.embed.local_dtype,
            indexes=("flat",),
            model_ref=result.run_id,
            train_run_id=result.run_id,
        )
        try:
            measured = open_set_task(
                val_emb, test_emb, config.open_set.false_alarm, device=config.embed.device
            )
        except TbprError as exc:
            log.warning("no open-set figures for %s: %s", name, exc)
            continue
        finally:
            shutil.rmtree(val_emb)  # scratch: the threshold and its figures are in the open_set table
        labels = {"model": name, "variant": result.variant, "seed": seeds.get(name)}
        labels |= {"train_run_id": result.run_id, "parent_run_id": parent_run_id, "dataset": dataset}
        written.append(write_measure(measured, run_dir / OPEN_SET_DIR / f"{name}.parquet", **labels))
        by_variant.setdefault(result.variant, []).append(measured)
    if by_variant:
        plot = open_set_plot_task(by_variant, run_dir / "plots" / OPEN_SET_PNG)
        log_files_task(config.tracking, parent_run_id, [plot], "plots")
        written.append(plot)
    return written
