"""Open-set figures: is the described person in the gallery at all, and how often is that answer right?

Every query of a split EMB is scored as the service searches (`CANDIDATES` from the flat index, re-ranked
by the model's pair scorer), from the EMB's stored features: its *present* score is the best of its own
person's images, its *absent* score the best of another person's, which is what the gallery answers
once that person's images are all removed. The decision threshold is the val absent scores'
(1 - false_alarm) quantile (`threshold_at`, also what `tbpr calibrate` stores); a score above it is a
match. `measure` applies it to test:

- false alarm: the person removed from the gallery, the best remaining image still clears the threshold
  (1 - the rate of correct "no match" answers);
- miss: the person present, the best image (any person's) does not clear it: "no confident match";
- hit: the person present, the best image clears it and is of that person.

The curve is the test false-alarm and miss rates over a grid of thresholds (the trade-off plot).
Dimension letters: Q queries, k candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from matplotlib.figure import Figure

from tasks.core.device import resolve_device
from tasks.core.errors import TbprError
from tasks.core.files import atomic_path, write_parquet_atomic
from tasks.embed.layout import SOURCE_FOLDER, EmbedInfo
from tasks.embed.store import EmbeddingStore
from tasks.score.pruned import batched_chunk_size, first_stage, rerank

CANDIDATES = 64  # as the service searches: the index's top 64, re-ranked by the pair scorer
MIN_QUERIES = 10  # fewer absent scores cannot place a quantile
CURVE_POINTS = 101  # thresholds of the trade-off curve
OPEN_SET_DIR = "open_set"  # RUN_DIR/open_set/<model>.parquet, one row per model
OPEN_SET_PNG = "open_set.png"  # in the run's plots folder
OPEN_SET_EMPTY = (  # the warehouse's `open_set` table when no run has such files
    "model VARCHAR, variant VARCHAR, seed BIGINT, train_run_id VARCHAR, parent_run_id VARCHAR, dataset VARCHAR, "
    "threshold DOUBLE, false_alarm_target DOUBLE, val_false_alarm DOUBLE, val_queries BIGINT, "
    "false_alarm DOUBLE, miss_rate DOUBLE, detected DOUBLE, hit_rate DOUBLE, queries BIGINT, "
    "absent_queries BIGINT, curve_threshold DOUBLE[], curve_false_alarm DOUBLE[], curve_miss DOUBLE[]"
)


def open_set_glob(runs: Path) -> str:
    """Every pipeline run's open-set files under the runs folder."""
    return str(runs / "*" / OPEN_SET_DIR / "*.parquet")


@dataclass(frozen=True)
class QueryScores:
    present: np.ndarray  # (Q,) best pair score of the query's own person; -inf: none among the candidates
    absent: np.ndarray  # (Q,) best pair score of another person's image; -inf: none among the candidates
    top_own: np.ndarray  # (Q,) bool: the best candidate is the query's own person

    @property
    def best(self) -> np.ndarray:
        """(Q,) the best score of the whole gallery: what the service compares with the threshold."""
        return np.maximum(self.present, self.absent)


def query_scores(
    emb: Path,
    *,
    device: str | torch.device = "cpu",
    candidates: int = CANDIDATES,
    memory_budget_mb: float = 512.0,
) -> QueryScores:
    """Present and absent scores of every query of a split EMB (queries with person ids)."""
    info = EmbedInfo.read(Path(emb))
    if info.source == SOURCE_FOLDER or info.num_queries == 0:
        raise TbprError(
            f"{emb} has no queries with person ids; use a split's EMB: `tbpr embed DATA --split val "
            "--run MODEL --out VAL_EMB`"
        )
    store = EmbeddingStore(Path(emb))
    torch_device = resolve_device(device)
    model = info.load_model(torch_device)
    k = min(candidates, store.num_images)
    found = first_stage(store.index("flat"), store.text_globals(), k)
    image_floats = model.head.candidate_image_floats(store.shapes().regions, store.shapes().dim)
    chunk = batched_chunk_size(k, store.shapes(), memory_budget_mb, image_floats)
    scores = rerank(model, store, found, device=torch_device, chunk=chunk, memory_budget_mb=memory_budget_mb)
    return scores_of_candidates(found.ids, scores.scores, store.gallery_ids()[1], store.query_ids()[1])


def scores_of_candidates(
    ids: np.ndarray, scores: np.ndarray, image_person: np.ndarray, query_person: np.ndarray
) -> QueryScores:
    """`QueryScores` from candidate rows `ids` (Q, k; -1: none) and their pair `scores` (Q, k)."""
    valid = (ids >= 0) & np.isfinite(scores)  # (Q, k)
    own = valid & (image_person[np.maximum(ids, 0)] == query_person[:, None])  # (Q, k)
    other = valid & ~own
    top = np.argmax(np.where(valid, scores, -np.inf), axis=1)  # (Q,) first of equal bests
    return QueryScores(
        present=np.where(own, scores, -np.inf).max(axis=1, initial=-np.inf).astype(np.float64),
        absent=np.where(other, scores, -np.inf).max(axis=1, initial=-np.inf).astype(np.float64),
        top_own=own[np.arange(len(ids)), top],
    )


def threshold_at(absent: np.ndarray, false_alarm: float) -> float:
    """The decision threshold: the (1 - false_alarm) quantile of the finite absent scores."""
    if not 0 < false_alarm < 1:
        raise TbprError(f"the false-alarm rate must be between 0 and 1 (got {false_alarm})")
    finite = np.asarray(absent, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) < MIN_QUERIES:
        raise TbprError(
            f"{len(finite)} usable queries; at least {MIN_QUERIES} are needed to place a threshold"
        )
    return float(np.quantile(finite, 1 - false_alarm, method="higher"))


@dataclass(frozen=True)
class OpenSetMeasure:
    """One model's operating point (threshold from val) and its test rates, with the trade-off curve."""

    threshold: float
    false_alarm_target: float
    val_false_alarm: float
    val_queries: int  # val queries with an absent score
    false_alarm: float  # test: person removed, best remaining image above the threshold
    miss_rate: float  # test: person present, best image not above it
    detected: float  # 1 - miss_rate
    hit_rate: float  # test: above the threshold and the top image is the person's
    queries: int  # test queries (present)
    absent_queries: int  # test queries with an absent score
    curve_threshold: tuple[float, ...]
    curve_false_alarm: tuple[float, ...]
    curve_miss: tuple[float, ...]


def rates(scores: QueryScores, threshold: float) -> tuple[float, float, float]:
    """(false alarm, miss rate, hit rate) of `scores` at `threshold` (a match is a score above it)."""
    absent = scores.absent[np.isfinite(scores.absent)]
    detected = scores.best > threshold
    return (
        float(np.mean(absent > threshold)),
        float(1 - np.mean(detected)),
        float(np.mean(detected & scores.top_own)),
    )


def measure_scores(val: QueryScores, test: QueryScores, false_alarm: float) -> OpenSetMeasure:
    """The threshold placed on `val` for `false_alarm`, measured on `test`."""
    threshold = threshold_at(val.absent, false_alarm)
    if not np.isfinite(test.absent).any():
        raise TbprError("no test query has another person's image among its candidates")
    fa, miss, hit = rates(test, threshold)
    finite = np.concatenate([test.absent, test.best])
    grid = np.unique(np.quantile(finite[np.isfinite(finite)], np.linspace(0, 1, CURVE_POINTS)))
    curve = np.array([rates(test, t)[:2] for t in grid])  # (T, 2)
    val_absent = val.absent[np.isfinite(val.absent)]
    return OpenSetMeasure(
        threshold=threshold,
        false_alarm_target=false_alarm,
        val_false_alarm=float(np.mean(val_absent > threshold)),
        val_queries=len(val_absent),
        false_alarm=fa,
        miss_rate=miss,
        detected=float(np.mean(test.best > threshold)),  # 1 - miss_rate, as a share (hit_rate <= it)
        hit_rate=hit,
        queries=len(test.best),
        absent_queries=int(np.isfinite(test.absent).sum()),
        curve_threshold=tuple(float(t) for t in grid),
        curve_false_alarm=tuple(float(v) for v in curve[:, 0]),
        curve_miss=tuple(float(v) for v in curve[:, 1]),
    )


def measure(
    val_emb: Path, test_emb: Path, false_alarm: float, *, device: str | torch.device = "cpu"
) -> OpenSetMeasure:
    """Calibrate on the val EMB at `false_alarm`, measure on the test EMB (one model's two splits)."""
    if not 0 < false_alarm < 1:
        raise TbprError(f"the false-alarm rate must be between 0 and 1 (got {false_alarm})")
    val, test = EmbedInfo.read(Path(val_emb)), EmbedInfo.read(Path(test_emb))
    if val.weights_digest != test.weights_digest or val.checkpoint != test.checkpoint:
        raise TbprError(f"{val_emb} and {test_emb} were embedded by different models; embed both with one")
    return measure_scores(
        query_scores(val_emb, device=device), query_scores(test_emb, device=device), false_alarm
    )


def write_measure(result: OpenSetMeasure, out: Path, **labels: str | int | None) -> Path:
    """One row: `labels` (model, variant, seed, ...) and the measure, curve as list columns."""
    row = {**labels, **asdict(result)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_parquet_atomic(pa.Table.from_pylist([row]), Path(out))


def trade_off_plot(measures: Mapping[str, Sequence[OpenSetMeasure]], out: Path) -> Path:
    """Miss rate against false-alarm rate on test, one curve per variant (the mean of its seeds' miss
    rates at each false-alarm rate), its operating point marked."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    levels = np.linspace(0, 1, CURVE_POINTS)
    for variant, seeds in sorted(measures.items()):
        misses = []
        for m in seeds:
            order = np.argsort(m.curve_false_alarm, kind="stable")
            misses.append(
                np.interp(levels, np.asarray(m.curve_false_alarm)[order], np.asarray(m.curve_miss)[order])
            )
        (line,) = ax.plot(100 * levels, 100 * np.mean(misses, axis=0), label=variant)
        point = np.mean([[m.false_alarm, m.miss_rate] for m in seeds], axis=0)
        ax.plot(100 * point[0], 100 * point[1], "o", color=line.get_color())
    target = next(iter(next(iter(measures.values())))).false_alarm_target if measures else None
    if target is not None:
        ax.axvline(100 * target, color="grey", linestyle=":", label=f"target {100 * target:g}%")
    ax.set(xlabel="false alarms on test (%): person not in the gallery, still matched", ylabel="missed (%)")
    ax.set_title("Open set: the person removed vs present (dots: threshold set on val)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out
