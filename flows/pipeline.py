"""Flow `tbpr-pipeline`: data -> prepare -> train -> embed -> score -> pictures -> warehouse -> leaderboard,
then, when a champion changed and `gallery` is configured, `refresh-gallery` (an image folder re-embedded).

A parent MLflow run holds the flattened run config; each training and scoring job is its child.
A variant that fails to train is named at the end and the flow ends Failed; the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow

from flows.config import (
    EmbedRunConfig,
    EmbedSettings,
    GalleryRunConfig,
    PipelineConfig,
    PrepareRunConfig,
    ScoreJob,
    ScoreRunConfig,
    TrainRunConfig,
    flatten,
    write_config,
)
from flows.embed import embed_gallery_flow
from flows.gallery import refresh_gallery_flow
from flows.open_set import measure_open_set
from flows.prefect_tasks import (
    attention_maps_task,
    close_run_task,
    cmc_plot_task,
    cost_plot_task,
    frontier_plot_task,
    grounding_plot_task,
    leaderboard_task,
    load_attributes_task,
    log_files_task,
    open_parent_run_task,
    remove_embs_task,
    sync_task,
    val_curves_plot_task,
)
from flows.prepare import prepare_dataset_flow, source_dir
from flows.runners import scoring_runner, task_runner
from flows.score import score_queries_flow
from flows.train import VariantsFailed, failure_message, train_variants_flow
from tasks.core.env import Home, home
from tasks.embed.retention import Removed, best_val_models
from tasks.report.frontier import FRONTIER_PNG
from tasks.report.open_set import open_set_glob
from tasks.report.plots import CMC_PNG, COST_PNG, GROUNDING_PNG, VAL_CURVES_PNG, CostPoint
from tasks.report.queries import QueryResult
from tasks.score.layout import rankings_glob
from tasks.score.run import ScoreResult
from tasks.train.loop import PHASES


@dataclass(frozen=True)
class PipelineResult:
    run_dir: Path
    parent_run_id: str
    warehouse: Path | None
    leaderboard: QueryResult | None
    failed: dict[str, str] = field(default_factory=dict)
    gallery: Path | None = None  # the configured gallery's EMB, when a new champion re-embedded it
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds of each stage of the flow
    runs: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)  # model -> (variant, phases)
    # the EMB folders `keep_emb` deleted once the run had read them
    removed: Removed = field(default_factory=Removed)

    @property
    def training(self) -> dict[str, float]:
        """The training runs' phases, summed (PHASES)."""
        return {k: sum(p.get(k, 0.0) for _, p in self.runs.values()) for k in PHASES}


def data_dir(tbpr: Home, config: PipelineConfig) -> Path:
    """Where prepared data lives: one folder per source (or synthetic settings), reused across runs."""
    if config.data.source is None:
        return tbpr.data / f"synth-{config.data.synth.tag}"
    return tbpr.prepared(config.data.source, config.data.format)


@flow(name="tbpr-pipeline")
def tbpr_pipeline(config: PipelineConfig = PipelineConfig()) -> PipelineResult:
    tbpr = home()
    run_dir = tbpr.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.name}"
    run_config = write_config(config, run_dir)
    runner = task_runner(config.runner)
    clock = PhaseClock()
    prepare = PrepareRunConfig(data=config.data, out=data_dir(tbpr, config))
    prepared = prepare_dataset_flow(prepare)
    clock.lap("prepare")
    parent = open_parent_run_task(
        config.tracking, prepared.dataset, f"pipeline-{config.name}", flatten(config)
    )
    log_files_task(config.tracking, parent, [run_config], "config")
    trained = train_variants_flow.with_options(task_runner=runner)(
        TrainRunConfig(
            data=prepared.out,
            train=config.train,
            tracking=config.tracking,
            runner=config.runner,
            out=run_dir / "train",
            parent_run_id=parent,
            fail_on_error=False,
        )
    )
    clock.lap("train")
    indexes = sorted({job.index for job in config.jobs if job.mode == "pruned"}) or ["flat"]
    embs: dict[str, Path] = {}
    for variant, result in trained.results.items():  # every model first: cascades read each other's
        embs[variant] = run_dir / "emb" / variant
        embed_gallery_flow(
            EmbedRunConfig(
                data=prepared.out,
                model=result.run_id,
                out=embs[variant],
                embed=config.embed,
                indexes=indexes,  # type: ignore[arg-type]
                tracking=config.tracking,
            )
        )
    clock.lap("embed")
    scored: dict[str, tuple[Path, list[ScoreResult]]] = {}
    for variant, emb in embs.items():
        jobs, sources = jobs_of(config, variant, trained.results[variant].variant, embs)
        scored[variant] = (
            emb,
            score_queries_flow.with_options(task_runner=scoring_runner(config.runner))(
                ScoreRunConfig(
                    emb=emb,
                    out=run_dir / "score" / variant,
                    jobs=jobs,
                    tracking=config.tracking,
                    runner=config.runner,
                    parent_run_id=parent,
                    candidates=sources,
                )
            ),
        )
    clock.lap("score")
    measure_open_set(config, prepared.out, prepared.dataset, trained.results, embs, run_dir, parent)
    clock.lap("open_set")
    pictures = draw_pictures(run_dir / "plots", scored, config)
    curves: dict[str, list[tuple[float, ...]]] = {}
    for r in trained.results.values():
        curves.setdefault(r.variant, []).append(r.val_curve)
    if curves:
        pictures.append(val_curves_plot_task(curves, run_dir / "plots" / VAL_CURVES_PNG))
    grounding = {
        name: (r.test_metrics["grounding"], r.test_metrics["grounding_chance"], r.variant)
        for name, r in trained.results.items()
        if "grounding" in r.test_metrics
    }
    if grounding:
        by_variant: dict[str, list[tuple[float, float]]] = {}
        for accuracy, chance, variant in grounding.values():
            by_variant.setdefault(variant, []).append((accuracy, chance))
        pictures.append(grounding_plot_task(by_variant, run_dir / "plots" / GROUNDING_PNG))
    log_files_task(config.tracking, parent, pictures, "plots")
    clock.lap("plots")
    warehouse, board = refresh_warehouse(tbpr, prepared.out, source_dir(prepare), config)
    if warehouse is not None and scored:  # every job of this run, single models and cascades
        frontier = frontier_plot_task(warehouse, run_dir / "plots" / FRONTIER_PNG)
        log_files_task(config.tracking, parent, [frontier], "plots")
    clock.lap("warehouse")
    removed = Removed()
    if config.keep_emb == "best_val":  # every reader of the EMBs has run: keep what users search with
        val = {name: (r.variant, r.val_metrics["R1"]) for name, r in trained.results.items()}
        removed = remove_embs_task(embs, best_val_models(val))
    close_run_task(config.tracking, parent, failed=bool(trained.failed))
    gallery = None
    if config.gallery is not None and any(r.promoted for r in trained.results.values()):
        settings = config.gallery
        refresh = GalleryRunConfig(
            folder=settings.folder,
            emb=settings.emb,
            model=settings.model,
            # the gallery's own precision (fp32, as `tbpr embed --images` and the deployment): the
            # pipeline's bf16 would make every later refresh re-embed the whole folder
            embed=config.embed.model_copy(update={"precision": EmbedSettings().precision}),
            tracking=config.tracking,
        )
        gallery = refresh_gallery_flow(refresh).out  # a champion changed: what users search follows it
    if trained.failed:
        raise VariantsFailed(failure_message(trained) + f"; the others are in {run_dir}")
    runs = {name: (r.variant, r.phases) for name, r in trained.results.items()}
    return PipelineResult(
        run_dir, parent, warehouse, board, trained.failed, gallery, clock.phases, runs, removed
    )


class PhaseClock:
    """Wall seconds between laps, by name: where a pipeline run's time went."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now


def jobs_of(
    config: PipelineConfig, name: str, variant: str, embs: dict[str, Path]
) -> tuple[list[ScoreJob], dict[str, Path]]:
    """The jobs that model `name` (of `variant`) runs, and the EMB folder of each variant trained with
    the same seed (a cascade's candidates come from the same seed's model; a variant that failed to
    train is absent, and its cascades are skipped). A job's `variants` limits the models that run it;
    a cascade from the model's own variant is its plain pruned job, so it is skipped too."""
    models = {model: (v, seed) for model, v, seed in config.train.models()}
    seed = models[name][1] if name in models else None
    sources = {v: embs[model] for model, (v, s) in models.items() if s == seed and model in embs}
    jobs = [
        job
        for job in config.jobs
        if (job.variants is None or variant in job.variants)
        and (job.candidates is None or (job.candidates in sources and job.candidates != variant))
    ]
    return jobs, sources


def draw_pictures(
    out: Path, scored: dict[str, tuple[Path, list[ScoreResult]]], config: PipelineConfig
) -> list[Path]:
    """CMC of each model's exhaustive job, R1 against cost of every job, and attention heat maps of
    each variant's first model (its other seeds would draw the same queries again)."""
    if not scored:
        return []
    exhaustive = {
        v: (r.out, emb) for v, (emb, results) in scored.items() for r in results if r.mode == "exhaustive"
    }
    points = [
        CostPoint(v, r.out.name, r.metrics["R1"], r.seconds)
        for v, (_, results) in scored.items()
        for r in results
    ]
    pictures = [cost_plot_task(points, out / COST_PNG)]
    if exhaustive:
        pictures.append(cmc_plot_task(exhaustive, out / CMC_PNG))
    drawn: set[object] = set()
    for emb, results in scored.values():
        variant = results[0].details.get("variant") if results else emb
        if variant not in drawn:
            drawn.add(variant)
            pictures += attention_maps_task(emb, out, config.plots.attention_queries, config.embed.device)
    return pictures


def refresh_warehouse(
    tbpr: Home, data: Path, source: Path, config: PipelineConfig
) -> tuple[Path | None, QueryResult | None]:
    """Sync MLflow + rankings into `warehouse.duckdb` and read the leaderboard (SQLite tracking only)."""
    db = config.tracking.sqlite_file()
    if db is None:
        return None, None
    attributes = load_attributes_task(source)
    sync_task(db, tbpr.warehouse, rankings_glob(tbpr.runs), [data], attributes, open_set_glob(tbpr.runs))
    return tbpr.warehouse, leaderboard_task(tbpr.warehouse)
