"""Flow `refresh-gallery`: re-embed an image folder incrementally with the best registered champion
(or a given model), so what `tbpr search` and `tbpr serve` answer follows the nightly retraining."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.config import GalleryRunConfig, write_config
from flows.prefect_tasks import best_champion_task, embed_folder_task, resolve_checkpoint_task
from tasks.embed.encode import EmbedSummary


@flow(name="refresh-gallery")
def refresh_gallery_flow(config: GalleryRunConfig) -> EmbedSummary:
    model = config.model
    if model is None:
        model, reason = best_champion_task(config.tracking)
        get_run_logger().info("model: %s, %s", model, reason)
    checkpoint, info = resolve_checkpoint_task(model, config.tracking)
    summary = embed_folder_task(
        config.folder,
        checkpoint,
        config.emb,
        batch_size=config.embed.batch_size,
        device=config.embed.device,
        precision=config.embed.precision,
        local_dtype=config.embed.local_dtype,
        indexes=tuple(config.indexes),
        model_ref=model,
        train_run_id=info.get("run_id"),
    )
    get_run_logger().info("refreshed %s from %s: %s", config.emb, config.folder, summary.counts)
    write_config(config, config.emb)
    return summary
