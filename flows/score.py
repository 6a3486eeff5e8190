"""Flow `score-queries`: each scoring job (a `ScorePlan`, built from its `ScoreJob`) over one EMB folder,
one MLflow run each."""

from __future__ import annotations

from prefect import flow

from flows.config import ScoreRunConfig, write_config
from flows.prefect_tasks import score_task
from tasks.score.run import ScoreResult


@flow(name="score-queries")
def score_queries_flow(config: ScoreRunConfig) -> list[ScoreResult]:
    write_config(config, config.out)
    futures = [
        score_task.with_options(task_run_name=f"score-{job.name}").submit(
            config.emb,
            config.out / job.name,
            mode=job.mode,
            candidates_from=config.candidates[job.candidates] if job.candidates else None,
            tracking=config.tracking,
            parent_run_id=config.parent_run_id,
            **job.plan_options(),
        )
        for job in config.jobs
    ]
    return [future.result() for future in futures]
