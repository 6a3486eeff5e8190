"""The one module that wraps library functions as Prefect tasks: a name, retries on I/O only, and
a cache policy (inputs + source + input files) for the deterministic steps, prepare and embed.

Flows (`flows/`) call these; tests call the library functions directly or a task's `.fn`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from tasks.core.errors import TbprError
from tasks.data.layout import MANIFEST
from tasks.data.prepare import prepare_dataset
from tasks.data.synth import generate
from tasks.data.synth.layout import ANNOTATIONS
from tasks.embed.encode import embed_split
from tasks.embed.folder import embed_folder
from tasks.embed.layout import EMBED_JSON
from tasks.embed.retention import remove_embs
from tasks.report.frontier import draw_frontier
from tasks.report.open_set import measure, trade_off_plot
from tasks.report.plots import attention_maps, cmc_plot, cost_plot, grounding_plot, val_curves_plot
from tasks.report.queries import leaderboard
from tasks.report.warehouse import load_attributes, sync
from tasks.score.run import score
from tasks.tracking.models import best_champion, resolve_checkpoint
from tasks.tracking.runs import close_run, log_files, open_parent_run
from tasks.tracking.store import promote_if_better
from tasks.train.loop import prepare_feature_cache, train_variant


def fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file under `path` (or of `path` itself)."""
    if path.is_file():
        stat = path.stat()
        return [(path.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            full = Path(root) / name
            stat = full.stat()
            found.append((str(full.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


@dataclass
class InputFiles(CachePolicy):
    """Inputs + task source + the files under the path inputs named in `paths`; no key (so the task
    runs) while the output marker `output/marker` is missing, so a deleted output is rebuilt."""

    paths: tuple[str, ...] = ()
    output: str = "out"
    marker: str = ""
    base: CachePolicy = field(default_factory=lambda: INPUTS + TASK_SOURCE)

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        if not (Path(inputs[self.output]) / self.marker).is_file():
            return None
        key = self.base.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        files = [fingerprint(Path(inputs[name])) for name in self.paths if inputs.get(name) is not None]
        return hash_objects(key, files)


def io_failure(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry condition: transient I/O, not bad input (a TbprError fails at once, with its message)."""
    return not isinstance(state.data, TbprError)


IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": io_failure}

synth_task = task(name="synth", cache_policy=InputFiles(output="out", marker=ANNOTATIONS))(generate)
prepare_task = task(
    name="prepare", cache_policy=InputFiles(paths=("source",), output="out", marker=MANIFEST)
)(prepare_dataset)
train_task = task(name="train-variant")(train_variant)
# the library function is a no-op when the cache exists (its folder is named by a content key)
feature_cache_task = task(
    name="feature-cache", cache_policy=InputFiles(paths=("data",), output="data", marker=MANIFEST)
)(prepare_feature_cache)
resolve_checkpoint_task = task(name="resolve-checkpoint", **IO_RETRIES)(resolve_checkpoint)
embed_task = task(
    name="embed", cache_policy=InputFiles(paths=("data", "checkpoint"), output="out", marker=EMBED_JSON)
)(embed_split)
# incremental by itself (files keyed by path and content hash), so never skipped by a cache
embed_folder_task = task(name="embed-folder")(embed_folder)
remove_embs_task = task(name="remove-embs")(remove_embs)
best_champion_task = task(name="best-champion", **IO_RETRIES)(best_champion)
promote_task = task(name="promote-if-better", **IO_RETRIES)(promote_if_better)
score_task = task(name="score")(score)
# I/O only: the MLflow store, the warehouse file, artifacts
sync_task = task(name="warehouse-sync", **IO_RETRIES)(sync)
load_attributes_task = task(name="load-attributes", **IO_RETRIES)(load_attributes)
leaderboard_task = task(name="leaderboard", **IO_RETRIES)(leaderboard)
open_parent_run_task = task(name="open-parent-run", **IO_RETRIES)(open_parent_run)
close_run_task = task(name="close-run", **IO_RETRIES)(close_run)
log_files_task = task(name="log-artifacts", **IO_RETRIES)(log_files)
cmc_plot_task = task(name="plot-cmc")(cmc_plot)
cost_plot_task = task(name="plot-cost")(cost_plot)
frontier_plot_task = task(name="plot-cost-frontier")(draw_frontier)
grounding_plot_task = task(name="plot-grounding")(grounding_plot)
val_curves_plot_task = task(name="plot-val-curves")(val_curves_plot)
attention_maps_task = task(name="plot-attention")(attention_maps)
open_set_task = task(name="open-set")(measure)
open_set_plot_task = task(name="plot-open-set")(trade_off_plot)
