"""How to train one variant (`TrainConfig`, pydantic: validated when loaded), and the model it builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.device import DeviceName, TrainPrecision
from tasks.core.errors import TbprError
from tbpr_models import ModelConfig
from tbpr_models.registry import VARIANTS, model_config_from_dict

# Settings that change how fast or where a run goes, not what it computes: free to differ on resume.
RUNTIME_FIELDS = frozenset(
    {
        "num_workers",
        "device",
        "eval_batch_size",
        "eval_query_block",
        "eval_gallery_block",
        "output_dir",
        "time_budget_minutes",
        "activation_checkpointing",
    }
)


def registered_variants() -> list[str]:
    """Every registered attention variant's CLI name, sorted: the default set a pipeline trains
    (calibration controls, such as `control_top_half`, only when asked)."""
    return sorted(name for name, spec in VARIANTS.items() if not spec.head_cls.control)


def control_variants() -> list[str]:
    """The registered positive controls (`train.control = true` adds them to a pipeline)."""
    return sorted(name for name, spec in VARIANTS.items() if spec.head_cls.control)


class TrainConfig(BaseModel):
    """How to train one variant. `model` overrides `tbpr_models.ModelConfig` fields by name:
    e.g. `{"embed_dim": 32, "text": {"kind": "small"}, "variant": {"k": 8}, "loss_weights": {"id": 0.5}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    variant: str = "global"
    model: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    pretrained_lr_scale: float = Field(default=0.1, gt=0)  # lr factor of pretrained encoder weights
    weight_decay: float = Field(default=0.02, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0)  # overrides warmup_epochs when set
    grad_clip_norm: float | None = Field(default=5.0, gt=0)
    sampler: Literal["random", "identity"] = "random"
    captions_per_identity: int = Field(default=2, ge=1)  # K of the identity sampler (P = batch_size // K)
    num_workers: int = Field(default=1, ge=0)  # 1 worker decodes while the main process trains (measured)
    device: DeviceName = "auto"
    # auto: bf16 where the device runs it natively, else fp32; fp16 trains with a gradient scaler
    precision: TrainPrecision = "auto"
    seed: int = 0
    # a safety limit only: a run it cuts is tagged stop_reason = "budget" and the leaderboard flags it
    time_budget_minutes: float | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=256, ge=1)
    eval_query_block: int = Field(default=256, ge=1)  # similarity blocks: queries x gallery images
    eval_gallery_block: int = Field(default=1024, ge=1)
    # pairwise heads: val (and the selected epoch's test) during training rank each caption's top
    # `eval_top_k` images by the global cosine, re-ranked by the pair score: pruned scoring, as
    # `tbpr score --mode pruned`; None scores every pair (exhaustive)
    eval_top_k: int | None = Field(default=None, ge=1)
    output_dir: Path | None = None  # checkpoints; default $TBPR_HOME/runs/train/<run id>
    # "cached": encode the frozen lower stages once (tasks.cache) and train only the top on the cache
    features: Literal["raw", "cached"] = "raw"
    # how the cache stores image activations: float16 (exact to its rounding) or 8-bit codes with a range
    # per image and channel (`tasks.core.packed.Quantized`: half the bytes, within (max - min) / 510)
    cache_dtype: Literal["float16", "uint8"] = "float16"
    # stop once the smoothed val R1 (trailing mean over `smooth` epochs) has not beaten its best by more
    # than `min_delta` for this many epochs; the checkpoint is the epoch of the best smoothed val R1
    patience: int | None = Field(default=None, ge=1)
    smooth: int = Field(default=1, ge=1)
    min_delta: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # a checkpoint (folder, train run id or models:/ URI) whose encoders (not projections) start training
    init_from: str | None = None
    # batches of batch_size per optimizer step (global batch: batch_size x this; the losses that compare
    # across the batch see one batch_size batch at a time)
    grad_accumulation: int = Field(default=1, ge=1)
    activation_checkpointing: bool = (
        False  # recompute trainable encoder activations in backward (less memory)
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        """Settings that only fail together, and the model settings, checked when the config is loaded."""
        if self.sampler == "identity" and self.batch_size // self.captions_per_identity < 2:
            raise ValueError(
                f"sampler 'identity' takes P = batch_size // captions_per_identity identities per batch: "
                f"{self.batch_size} // {self.captions_per_identity} < 2; raise batch_size or lower "
                "captions_per_identity"
            )
        try:
            model_config(self, num_classes=0)
        except TbprError as exc:
            raise ValueError(str(exc)) from None
        return self


def model_config(config: TrainConfig, num_classes: int) -> ModelConfig:
    """The ModelConfig of `config.variant` with `config.model` overrides and the training identities."""
    overrides = dict(config.model)
    variant = {**overrides.pop("variant", {}), "kind": config.variant}
    try:
        return model_config_from_dict({"num_classes": num_classes, **overrides, "variant": variant})
    except (ValueError, TypeError, FileNotFoundError) as exc:  # FileNotFoundError: a CLIP folder
        raise TbprError(f"bad model settings for variant {config.variant!r}: {exc}") from exc
