"""What a training call returns (`TrainResult`) and the phases its wall time is split into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.train.state import STOP_EPOCHS


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    variant: str
    best_epoch: int
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    checkpoint_dir: Path  # the selected epoch's directory (model.safetensors + config.json)
    samples_per_s: float  # mean training throughput over the epochs run
    model_version: str
    promoted: bool
    epochs: int = 0  # epochs run (fewer than configured after a time budget or a val plateau)
    train_seconds: float = 0.0  # of those epochs, with their val evaluation
    stop_reason: str = STOP_EPOCHS  # epochs | plateau | budget (tag `stop_reason`)
    val_curve: tuple[float, ...] = ()  # val R1 of every epoch run
    # wall seconds of this call by phase (PHASES); `overhead` is the share not spent in training steps
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def wall_seconds(self) -> float:
        return sum(self.phases.values())

    @property
    def overhead(self) -> float:
        """Fraction of the call's wall time not spent in training steps (0..1)."""
        wall = self.wall_seconds
        return 1.0 - self.phases.get("steps", 0.0) / wall if wall else 0.0

    def phase_summary(self) -> str:
        """One line: total, then each phase's seconds, e.g. `14.2 s: steps 8.1, val 3.0, ... (overhead 43%)`."""
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items() if v >= 0.05)
        return f"{self.wall_seconds:.1f} s: {parts} (overhead {100 * self.overhead:.0f}%)"


# Where a training call's wall time goes: `build` (model, pretrained weights, feature cache, MLflow run),
# `steps` (forward, backward, optimizer), `val` (per-epoch evaluation), `checkpoint` (epoch folders and
# their metrics), `finish` (test evaluation, grounding, artifacts, registration and promotion)
PHASES = ("build", "steps", "val", "checkpoint", "finish")
