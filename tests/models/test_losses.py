"""Losses against values derived by hand on 2-3 element inputs."""

from __future__ import annotations

import math

import pytest
import torch

from tbpr_models.losses import id_loss, itc_loss, mlm_loss, ranking_loss, sdm_loss


def _kl_row(logits: list[float], target: list[float], eps: float = 1e-8) -> float:
    """KL(softmax(logits) || target) with IRRA's log(target + eps)."""
    z = sum(math.exp(v) for v in logits)
    p = [math.exp(v) / z for v in logits]
    return sum(pi * (math.log(pi) - math.log(ti + eps)) for pi, ti in zip(p, target, strict=True))


def test_sdm_two_people_matches_hand_kl() -> None:
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)  # normalised inside
    scale = torch.tensor(2.0, dtype=torch.float64)
    loss = sdm_loss(text, image, torch.tensor([7, 9]), scale)
    # cosines: text x image = [[1, 0], [0.6, 0.8]]; scaled by 2
    t2i = (_kl_row([2.0, 0.0], [1, 0]) + _kl_row([1.2, 1.6], [0, 1])) / 2
    i2t = (_kl_row([2.0, 1.2], [1, 0]) + _kl_row([0.0, 1.6], [0, 1])) / 2
    assert loss.item() == pytest.approx(t2i + i2t, rel=1e-9)


def test_sdm_same_person_target_is_uniform_over_matches() -> None:
    text = torch.eye(3, dtype=torch.float64)
    image = torch.eye(3, dtype=torch.float64)
    loss = sdm_loss(text, image, torch.tensor([4, 4, 5]), torch.tensor(1.0, dtype=torch.float64))
    # rows 0 and 1: target (1/2, 1/2, 0); row 2: (0, 0, 1); the matrix is symmetric, so i2t == t2i
    rows = [
        _kl_row([1, 0, 0], [0.5, 0.5, 0]),
        _kl_row([0, 1, 0], [0.5, 0.5, 0]),
        _kl_row([0, 0, 1], [0, 0, 1]),
    ]
    assert loss.item() == pytest.approx(2 * sum(rows) / 3, rel=1e-9)


def test_id_loss_is_mean_of_two_cross_entropies() -> None:
    image_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    text_logits = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    loss = id_loss(image_logits, text_logits, torch.tensor([0, 1]))
    image_ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    text_ce = (math.log(2) + math.log(1 + math.exp(3))) / 2
    assert loss.item() == pytest.approx((image_ce + text_ce) / 2, rel=1e-6)


def test_itc_symmetric_infonce() -> None:
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = itc_loss(text, image, torch.tensor(1.0, dtype=torch.float64))
    # logits [[1, 0], [0.6, 0.8]]; targets on the diagonal
    t2i = (math.log(math.exp(1) + 1) - 1 + math.log(math.exp(0.6) + math.exp(0.8)) - 0.8) / 2
    i2t = (math.log(math.exp(1) + math.exp(0.6)) - 1 + math.log(1 + math.exp(0.8)) - 0.8) / 2
    assert loss.item() == pytest.approx((t2i + i2t) / 2, rel=1e-9)


def test_mlm_ignores_minus_100() -> None:
    logits = torch.tensor([[[1.0, 2.0, 3.0], [9.0, 0.0, 0.0]]])  # (1, 2, 3)
    labels = torch.tensor([[0, -100]])
    expected = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1.0
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mlm_with_no_label_is_zero_and_differentiable() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None


def test_ranking_loss_hardest_negative_both_directions() -> None:
    scores = torch.tensor([[0.9, 0.5], [0.3, 0.4]], requires_grad=True)
    loss = ranking_loss(scores, torch.tensor([0, 1]), margin=0.2)
    # rows: max(0, .2 - .9 + .5) = 0, max(0, .2 - .4 + .3) = .1; columns: 0 and .2 - .4 + .5 = .3
    assert loss.item() == pytest.approx((0.0 + 0.1) / 2 + (0.0 + 0.3) / 2, abs=1e-6)
    loss.backward()
    assert scores.grad is not None
    assert scores.grad[0, 0].item() == 0.0  # satisfied by the margin in both directions


def test_ranking_loss_same_person_is_not_a_negative() -> None:
    # captions 0 and 1 show the same person: the high score (0, 1) is a second positive, not a negative
    scores = torch.tensor([[0.5, 0.9, 0.1], [0.8, 0.6, 0.2], [0.0, 0.6, 0.7]])
    loss = ranking_loss(scores, torch.tensor([3, 3, 8]), margin=0.2)
    rows = [
        (max(0, 0.2 - 0.5 + 0.1) + max(0, 0.2 - 0.9 + 0.1)) / 2,
        (max(0, 0.2 - 0.8 + 0.2) + max(0, 0.2 - 0.6 + 0.2)) / 2,
        max(0, 0.2 - 0.7 + 0.6),
    ]
    cols = [
        (max(0, 0.2 - 0.5 + 0.0) + max(0, 0.2 - 0.8 + 0.0)) / 2,
        (max(0, 0.2 - 0.9 + 0.6) + max(0, 0.2 - 0.6 + 0.6)) / 2,
        max(0, 0.2 - 0.7 + 0.2),
    ]
    assert loss.item() == pytest.approx(sum(rows) / 3 + sum(cols) / 3, abs=1e-6)
    assert loss.item() > 0  # the example is not trivially zero


def test_ranking_loss_without_negatives_is_zero() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    assert ranking_loss(scores, torch.tensor([1, 1])).item() == 0.0


def test_sdm_in_fp16_is_finite_and_matches_fp32() -> None:
    torch.manual_seed(0)
    texts, images = torch.randn(6, 8), torch.randn(6, 8)
    pids = torch.tensor([0, 0, 1, 1, 2, 3])
    scale = torch.tensor(50.0)
    full = sdm_loss(texts, images, pids, scale)
    half = sdm_loss(texts.half(), images.half(), pids, scale.half())
    assert torch.isfinite(half)
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)
