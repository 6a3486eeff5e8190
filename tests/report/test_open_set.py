"""Open-set figures: the val threshold at a false-alarm rate, measured on test with each query's person
removed from the gallery (false alarms) and present (misses, hits), against independent computations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.core.errors import TbprError
from tasks.report import open_set
from tasks.report.open_set import QueryScores


def _random_candidates(rng: np.random.Generator, queries: int, k: int = 6, gallery: int = 30) -> tuple:
    """(ids (Q, k) with some -1, scores (Q, k), image person ids (G,), query person ids (Q,))."""
    ids = np.stack([rng.choice(gallery, size=k, replace=False) for _ in range(queries)])
    ids[rng.random(ids.shape) < 0.1] = -1
    scores = rng.normal(size=ids.shape).astype(np.float32)
    scores[ids < 0] = -np.inf
    return ids, scores, rng.integers(0, 8, size=gallery), rng.integers(0, 8, size=queries)


def _loop_scores(
    ids: np.ndarray, scores: np.ndarray, image_person: np.ndarray, query_person: np.ndarray
) -> list:
    """Independently, query by query: (present, absent, top is own) over the valid candidates."""
    out = []
    for q in range(len(ids)):
        own = [
            float(s)
            for i, s in zip(ids[q], scores[q], strict=True)
            if i >= 0 and image_person[i] == query_person[q]
        ]
        other = [
            float(s)
            for i, s in zip(ids[q], scores[q], strict=True)
            if i >= 0 and image_person[i] != query_person[q]
        ]
        valid = [(float(s), i) for i, s in zip(ids[q], scores[q], strict=True) if i >= 0]
        top = max(valid, key=lambda pair: pair[0])[1] if valid else -1
        out.append(
            (
                max(own, default=-np.inf),
                max(other, default=-np.inf),
                top >= 0 and image_person[top] == query_person[q],
            )
        )
    return out


def test_candidate_scores_and_rates_match_a_query_by_query_count() -> None:
    rng = np.random.default_rng(0)
    val = open_set.scores_of_candidates(*_random_candidates(rng, 200))
    test_inputs = _random_candidates(rng, 150)
    test = open_set.scores_of_candidates(*test_inputs)
    expected = _loop_scores(*test_inputs)
    assert np.array_equal(test.present, [e[0] for e in expected])
    assert np.array_equal(test.absent, [e[1] for e in expected])
    assert test.top_own.tolist() == [e[2] for e in expected]

    result = open_set.measure_scores(val, test, 0.1)
    absent_val = sorted(a for a in val.absent if np.isfinite(a))
    threshold = absent_val[int(np.ceil(0.9 * (len(absent_val) - 1)))]  # the 90% quantile, "higher"
    assert result.threshold == threshold
    assert result.val_false_alarm == pytest.approx(sum(a > threshold for a in absent_val) / len(absent_val))
    absent_test = [e[1] for e in expected if np.isfinite(e[1])]
    assert result.absent_queries == len(absent_test) and result.queries == 150
    assert result.false_alarm == pytest.approx(sum(a > threshold for a in absent_test) / len(absent_test))
    best = [max(e[0], e[1]) for e in expected]
    assert result.miss_rate == pytest.approx(sum(b <= threshold for b in best) / 150)
    assert result.hit_rate == pytest.approx(
        sum(b > threshold and e[2] for b, e in zip(best, expected, strict=True)) / 150
    )
    assert result.detected == pytest.approx(1 - result.miss_rate) and result.hit_rate <= result.detected
    # the curve: false alarms fall and misses rise as the threshold rises
    assert np.all(np.diff(result.curve_threshold) > 0)
    assert np.all(np.diff(result.curve_false_alarm) <= 0) and np.all(np.diff(result.curve_miss) >= 0)
    assert result.curve_false_alarm[-1] == 0.0 and result.curve_miss[-1] == 1.0


def test_bad_rates_and_too_few_queries_are_errors() -> None:
    scores = QueryScores(present=np.zeros(5), absent=np.arange(5.0), top_own=np.ones(5, dtype=bool))
    for rate in (0.0, 1.0, 1.5):
        with pytest.raises(TbprError, match="between 0 and 1"):
            open_set.threshold_at(np.arange(50.0), rate)
    with pytest.raises(TbprError, match="at least 10"):
        open_set.measure_scores(scores, scores, 0.05)


def test_measure_on_an_emb_matches_exhaustive_pair_scores(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """On a real EMB (tiny gallery: every image is a candidate): the absent scores are the best pair
    score of another person's image over the whole gallery, computed independently."""
    import torch

    from tasks.embed.encode import embed_split
    from tasks.embed.store import EmbeddingStore

    emb = embed_split(
        tiny_data, tiny_checkpoint("global"), tmp_path / "emb", batch_size=8, indexes=("flat",)
    ).out
    store = EmbeddingStore(emb)
    model = store.info.load_model(torch.device("cpu"))
    _, image_person = store.gallery_ids()
    _, query_person = store.query_ids()
    with torch.inference_mode():
        full = model.similarity(
            store.texts(slice(0, store.num_texts), torch.device("cpu"), torch.float32),
            store.images(slice(0, store.num_images), torch.device("cpu"), torch.float32),
        ).numpy()  # (Q, G)
    absent = np.where(image_person[None, :] != query_person[:, None], full, -np.inf).max(axis=1)
    best = full.max(axis=1)

    result = open_set.measure(emb, emb, 0.25)  # one split plays val and test here
    assert result.threshold == pytest.approx(np.quantile(absent, 0.75, method="higher"), abs=1e-4)
    low, high = result.threshold - 1e-4, result.threshold + 1e-4  # the threshold is one of the scores
    assert np.mean(absent > high) <= result.false_alarm <= np.mean(absent > low)
    assert np.mean(best <= low) <= result.miss_rate <= np.mean(best <= high)
    assert np.mean(absent > high) < 0.5 < np.mean(best <= high)  # tiny random model: not vacuous

    table = pq.read_table(
        open_set.write_measure(result, tmp_path / "os" / "m.parquet", model="global-seed0", seed=0)
    )
    assert table.num_rows == 1 and table.column("threshold")[0].as_py() == result.threshold
    png = open_set.trade_off_plot({"global": [result, result]}, tmp_path / "plots" / open_set.OPEN_SET_PNG)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TbprError, match="no embeddings folder"):
        open_set.measure(tmp_path / "missing", emb, 0.05)
