"""Retrieval metrics against a brute-force per-query loop and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tbpr_models.metrics import cmc_curve, per_query_metrics, retrieval_metrics


def _ranked_gallery(sim: np.ndarray, q: int) -> list[int]:
    """Gallery indices of query q by descending score, ties by gallery order."""
    return sorted(range(sim.shape[1]), key=lambda g: (-float(sim[q, g]), g))


def _brute_force(sim: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray) -> dict[str, float]:
    """Per-query Python loop: rank by descending score, ties by gallery order."""
    r1 = r5 = r10 = ap = inp = 0.0
    for q in range(sim.shape[0]):
        ranked = _ranked_gallery(sim, q)
        hit_ranks = [r + 1 for r, g in enumerate(ranked) if gallery_pids[g] == query_pids[q]]
        r1 += hit_ranks[0] <= 1
        r5 += hit_ranks[0] <= 5
        r10 += hit_ranks[0] <= 10
        ap += sum((k + 1) / r for k, r in enumerate(hit_ranks)) / len(hit_ranks)
        inp += len(hit_ranks) / hit_ranks[-1]
    n = sim.shape[0]
    return {
        "R1": 100 * r1 / n,
        "R5": 100 * r5 / n,
        "R10": 100 * r10 / n,
        "mAP": 100 * ap / n,
        "mINP": 100 * inp / n,
    }


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gallery_pids = np.concatenate([np.arange(8), rng.integers(0, 8, size=22)])
    query_pids = rng.integers(0, 8, size=17)
    sim = rng.integers(0, 6, size=(17, 30)).astype(np.float32) / 5  # many ties
    return sim, query_pids, gallery_pids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties(seed: int) -> None:
    sim, query_pids, gallery_pids = _random_case(seed)
    got = retrieval_metrics(sim, query_pids, gallery_pids)
    expected = _brute_force(sim, query_pids, gallery_pids)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", [0, 1])
def test_per_query_results_average_to_the_metrics(seed: int) -> None:
    sim, query_pids, gallery_pids = _random_case(seed)
    per_query = per_query_metrics(sim, query_pids, gallery_pids)
    expected = retrieval_metrics(sim, query_pids, gallery_pids)
    assert per_query.first_match_rank.shape == (17,)
    for k in (1, 5, 10):
        assert 100 * np.mean(per_query.first_match_rank <= k) == pytest.approx(expected[f"R{k}"])
    assert 100 * per_query.average_precision.mean() == pytest.approx(expected["mAP"])
    assert 100 * per_query.inverse_negative_penalty.mean() == pytest.approx(expected["mINP"])


def test_numpy_and_torch_inputs_agree() -> None:
    sim, query_pids, gallery_pids = _random_case(3)
    from_numpy = retrieval_metrics(sim, query_pids, gallery_pids)
    from_torch = retrieval_metrics(
        torch.from_numpy(sim), torch.from_numpy(query_pids), torch.from_numpy(gallery_pids)
    )
    from_bf16 = retrieval_metrics(
        torch.from_numpy(sim).bfloat16(), query_pids, torch.from_numpy(gallery_pids)
    )
    assert from_numpy == from_torch
    assert from_bf16 == pytest.approx(from_numpy)  # multiples of 0.2 survive bf16 ordering


def test_hand_case_positives_at_ranks_1_and_4() -> None:
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    got = retrieval_metrics(sim, np.array([5]), np.array([5, 1, 2, 5]))
    assert got["mINP"] == pytest.approx(100 * 2 / 4)
    assert got["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 4) / 2)
    assert got["R1"] == 100.0


def test_ties_broken_by_gallery_order() -> None:
    sim = np.array([[0.5, 0.5, 0.5]])
    got = retrieval_metrics(sim, np.array([2]), np.array([1, 2, 1]))
    assert got["R1"] == 0.0
    assert got["R5"] == 100.0
    assert got["mAP"] == pytest.approx(100 * 1 / 2)


def test_query_without_positive_raises_naming_it() -> None:
    sim = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"query index \[1\].*person id \[9\]"):
        retrieval_metrics(sim, np.array([0, 9, 1]), np.array([0, 1]))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="expected"):
        retrieval_metrics(np.zeros((2, 3)), np.array([0, 1]), np.array([0, 1]))


def test_cmc_curve_against_brute_force() -> None:
    sim, query_pids, gallery_pids = _random_case(4)
    curve = cmc_curve(sim, query_pids, gallery_pids, max_rank=30)
    first = [
        min(r + 1 for r, g in enumerate(_ranked_gallery(sim, q)) if gallery_pids[g] == query_pids[q])
        for q in range(sim.shape[0])
    ]
    expected = [100 * np.mean([f <= r for f in first]) for r in range(1, 31)]
    np.testing.assert_allclose(curve, expected)
    assert curve[0] == retrieval_metrics(sim, query_pids, gallery_pids)["R1"]


def test_more_positive_pairs_than_one_chunk() -> None:
    rng = np.random.default_rng(5)
    gallery_pids = np.repeat(np.arange(5), 10)  # 10 positives per query
    query_pids = rng.integers(0, 5, size=300)  # 3,000 (query, positive) pairs > one chunk of 2,048
    sim = rng.integers(0, 20, size=(300, 50)).astype(np.float64)
    got = retrieval_metrics(sim, query_pids, gallery_pids)
    expected = _brute_force(sim, query_pids, gallery_pids)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
