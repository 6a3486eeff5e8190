"""Open-set answers: is the described person in the gallery at all?

A model's raw pair scores (1.115, 1.091, ...) say nothing on their own. `calibrate(val_emb)` measures
them on the val split, where every query's own person can play "present" and, left out, "not present":
for each val query, the best score of another person's image is what a gallery without that person
would answer (an *absent* score), and the best score of its own person's images is the *present* one.
The decision threshold is the absent scores' (1 - false_alarm) quantile: at most that share of people
who are not in the gallery still get a match. The *confidence* of a score is the share of absent
scores below it (0.95 at the threshold for a 5% false-alarm rate): "only 5% of people not in the
gallery score this high".

The result is written beside the model, `CHECKPOINT/open_set.json` (with the weights' digest: a
retrained checkpoint's file is ignored), so every EMB the model embeds, and each re-embed of a served
folder, finds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.files import write_json_atomic
from tasks.embed.layout import EmbedInfo
from tasks.report.open_set import query_scores, threshold_at
from tbpr_models.checkpoint import weights_digest

log = logging.getLogger(__name__)

OPEN_SET = "open_set.json"  # in the checkpoint folder
FALSE_ALARM = 0.05
QUANTILES = 101  # absent-score quantiles stored for the confidence curve


@dataclass(frozen=True)
class OpenSet:
    threshold: float  # a score above it is a confident match
    false_alarm_target: float
    false_alarm: float  # measured on val at the threshold: absent queries scoring above it
    miss_rate: float  # measured on val: present queries whose own person scores at or below it
    queries: int
    absent_quantiles: tuple[float, ...]  # QUANTILES values, 0% to 100%
    weights_digest: str
    val_emb: str

    def confidence(self, score: float) -> float:
        """The share of absent val scores below `score`, in [0, 1]."""
        levels = np.linspace(0.0, 1.0, len(self.absent_quantiles))
        return float(np.interp(score, self.absent_quantiles, levels, left=0.0, right=1.0))

    def is_match(self, score: float) -> bool:
        return score > self.threshold


def calibrate(val_emb: Path, false_alarm: float = FALSE_ALARM, *, device: str = "cpu") -> OpenSet:
    """The open-set threshold and confidence curve of the model that embedded `val_emb` (a split EMB
    with queries and person ids: `tbpr embed DATA --split val`)."""
    info = EmbedInfo.read(val_emb)
    found = query_scores(val_emb, device=device)  # a TbprError for an EMB without queries
    threshold = threshold_at(found.absent, false_alarm)
    scores = np.sort(found.absent[np.isfinite(found.absent)])
    present = found.present
    result = OpenSet(
        threshold=threshold,
        false_alarm_target=false_alarm,
        false_alarm=float(np.mean(scores > threshold)),
        miss_rate=float(np.mean(np.asarray(present) <= threshold)),
        queries=len(present),
        absent_quantiles=tuple(float(q) for q in np.quantile(scores, np.linspace(0, 1, QUANTILES))),
        weights_digest=weights_digest(info.checkpoint),
        val_emb=str(val_emb),
    )
    log.info(
        "open set of %s: threshold %.4f, false alarms %.1f%%, missed %.1f%% (%d val queries)",
        info.variant, threshold, 100 * result.false_alarm, 100 * result.miss_rate, result.queries,
    )  # fmt: skip
    return result


def write(result: OpenSet, checkpoint: Path) -> Path:
    return write_json_atomic(Path(checkpoint) / OPEN_SET, dataclasses.asdict(result), indent=1)


def read(checkpoint: Path) -> OpenSet | None:
    """The calibration stored beside `checkpoint` for its current weights, or None (none, damaged, or
    made for other weights)."""
    path = Path(checkpoint) / OPEN_SET
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["absent_quantiles"] = tuple(float(v) for v in raw["absent_quantiles"])
        result = OpenSet(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s is damaged (%s); answers are not calibrated", path, exc)
        return None
    if result.weights_digest != weights_digest(checkpoint):
        log.warning("%s was calibrated for other weights; answers are not calibrated", path)
        return None
    return result
