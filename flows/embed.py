"""Flow `embed-gallery`: features and FAISS indexes of the test split for one trained model."""

from __future__ import annotations

from prefect import flow

from flows.config import EmbedRunConfig, write_config
from flows.prefect_tasks import embed_task, resolve_checkpoint_task
from tasks.embed.encode import EmbedSummary


@flow(name="embed-gallery")
def embed_gallery_flow(config: EmbedRunConfig) -> EmbedSummary:
    checkpoint, info = resolve_checkpoint_task(config.model, config.tracking)
    summary = embed_task(
        config.data,
        checkpoint,
        config.out,
        batch_size=config.embed.batch_size,
        device=config.embed.device,
        precision=config.embed.precision,
        local_dtype=config.embed.local_dtype,
        indexes=tuple(config.indexes),
        model_ref=config.model,
        train_run_id=info.get("run_id"),
        shards=config.embed.shards,
        scheduler=config.embed.scheduler,
    )
    write_config(config, config.out)
    return summary
