"""Run settings shared by the training stage, the CLI and the flows (pydantic, no heavy imports).

`TrainConfig` says how to train one variant; `TrackingConfig` where MLflow writes.
`apply_overrides` applies `--set a.b=c` pairs to any pydantic settings model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tbpr.env import tbpr_home
from tbpr.errors import TbprError

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class TrainConfig(BaseModel):
    """How to train one variant. `model` overrides `tbpr_models.ModelConfig` fields by name:
    e.g. `{"embed_dim": 32, "text": {"kind": "small"}, "variant": {"k": 8}, "loss_weights": {"id": 0.5}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["bf16", "fp32"] = "bf16"
    seed: int = 0
    time_budget_minutes: float | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=256, ge=1)
    eval_query_block: int = Field(default=256, ge=1)  # similarity blocks: queries x gallery images
    eval_gallery_block: int = Field(default=1024, ge=1)
    output_dir: Path | None = None  # checkpoints; default $TBPR_HOME/runs/train/<run id>


class TrackingConfig(BaseModel):
    """Where MLflow records: SQLite under TBPR_HOME by default, or a server URI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None  # default sqlite:///$TBPR_HOME/mlflow.db
    artifact_root: str | None = None  # default $TBPR_HOME/mlartifacts (new experiments only)
    experiment: str | None = None  # default tbpr/<dataset>

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{tbpr_home() / 'mlflow.db'}"

    def experiment_artifact_location(self, experiment: str) -> str:
        root = self.artifact_root or (tbpr_home() / "mlartifacts").as_uri()
        return f"{root.rstrip('/')}/{experiment}"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are JSON when they parse, else strings."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TbprError(f"override {pair!r} is not key=value; write e.g. --set model.embed_dim=128")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TbprError(f"override {pair!r} conflicts with an earlier override of {part!r}")
        node[leaf] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `update` merged in, recursively for nested dicts."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(settings: SettingsT, pairs: list[str]) -> SettingsT:
    """`settings` with `--set key=value` pairs applied and validated; a bad key or value -> TbprError."""
    data = deep_merge(settings.model_dump(mode="json"), parse_overrides(pairs))
    try:
        return type(settings).model_validate(data)
    except ValidationError as exc:
        raise TbprError(f"invalid --set override: {exc}; check the key names and value types") from exc
