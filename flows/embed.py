"""Flow `embed-gallery`: features and FAISS indexes of the test split for one trained model."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.config import EmbedRunConfig, write_config
from tasks.embed import EmbedSummary
from tasks.prefect_tasks import embed_task, resolve_model_task


@flow(name="embed-gallery")
def embed_gallery_flow(config: EmbedRunConfig) -> EmbedSummary:
    train_run_id = None
    checkpoint = Path(config.model)
    if not checkpoint.is_dir():
        checkpoint, info = resolve_model_task(config.model, config.tracking)
        train_run_id = info["run_id"]
    summary = embed_task(
        config.data,
        checkpoint,
        config.out,
        batch_size=config.embed.batch_size,
        device=config.embed.device,
        precision=config.embed.precision,
        indexes=tuple(config.indexes),
        model_ref=config.model,
        train_run_id=train_run_id,
    )
    write_config(config, config.out)
    return summary
