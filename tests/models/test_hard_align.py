"""`hard_align` (CHAN's hard aligning): the pair score against plain loops, the candidate kernel
against the full matrix, the one-hot heat map, and a few training steps of a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from tbpr_models import VARIANTS, ModelConfig, build_model, variant_config
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.variant import HeadDims
from tbpr_models.variants.hard_align import HardAlignHead, hard_align_candidates, hard_align_similarity
from tests.models.test_pairwise import (
    _random_scan_inputs as _inputs,
)  # (5, 6, 8) words, mask, (7, 4, 8) regions

VOCAB = 50


def _pair(words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor, pooling: str, tau: float) -> float:
    """One pair by plain loops: each real word's best cosine over the regions, pooled over words."""
    best = []
    for w, real in zip(words, mask, strict=True):
        if real:
            best.append(max(float(w @ v / (w.norm() * v.norm())) for v in regions))
    if pooling == "mean":
        return sum(best) / len(best)
    return tau * math.log(sum(math.exp(s / tau) for s in best))


@pytest.mark.parametrize(
    ("pooling", "tau", "block"), [("lse", 0.1, (512, 16)), ("lse", 0.5, (3, 2)), ("mean", 0.1, (1, 1))]
)
def test_hard_align_similarity_equals_per_pair_loop(pooling: str, tau: float, block: tuple[int, int]) -> None:
    text, mask, images = _inputs(0)
    got = hard_align_similarity(text, mask, images, pooling, tau, block)  # type: ignore[arg-type]
    assert got.shape == (5, 7) and got.dtype == torch.float64
    for q in range(5):
        for g in range(7):
            assert got[q, g].item() == pytest.approx(
                _pair(text[q], mask[q], images[g], pooling, tau), abs=1e-10
            )


@pytest.mark.parametrize("pooling", ["lse", "mean"])
def test_hard_align_candidates_equal_the_full_matrix_at_the_slots(pooling: str) -> None:
    text, mask, images = _inputs(1)
    mask[4] = False  # a caption without words scores -inf
    gen = torch.Generator().manual_seed(2)
    candidates = torch.stack([torch.randperm(7, generator=gen)[:5] for _ in range(5)])  # (Q, k)
    candidates[1, 2] = -1
    candidates[3] = -1
    full = hard_align_similarity(text, mask, images, pooling)  # type: ignore[arg-type]  # (Q, G)
    for block_bytes in (4 * 2**20, 1.0):  # one block; one query per block
        got = hard_align_candidates(text, mask, images, candidates, pooling, 0.1, block_bytes)  # type: ignore[arg-type]
        for q in range(5):
            for j, g in enumerate(candidates[q].tolist()):
                expected = full[q, g].item() if g >= 0 else -math.inf
                assert got[q, j].item() == pytest.approx(expected, abs=1e-12)
    assert torch.isneginf(got[4]).all() and torch.isneginf(got[3]).all()


def test_hard_align_is_registered_pairwise_with_the_pair_scorers_losses() -> None:
    spec = VARIANTS["hard_align"]
    assert spec.head_cls.pairwise and spec.head_cls.loss_names == ("rank",)
    with pytest.raises(ValueError, match="tau"):
        variant_config("hard_align", tau=0.0)


def test_hard_align_heat_map_is_one_region_per_real_word() -> None:
    text, mask, images = _inputs(3)
    dims = HeadDims(embed_dim=8, image_grid=(2, 2), max_length=6, vocab_size=VOCAB)
    head = HardAlignHead(variant_config("hard_align"), dims)  # type: ignore[arg-type]
    texts = TextFeatures(global_=text.mean(1), local=text[:1], mask=mask[:1])
    attention = head.word_region_attention(texts, ImageFeatures(global_=images.mean(1), local=images[:1]))
    assert attention.shape == (6, 4)
    torch.testing.assert_close(attention.sum(dim=1), mask[0].to(torch.float64))
    for word in range(6):
        if mask[0, word]:
            cosines = [float(text[0, word] @ v / (text[0, word].norm() * v.norm())) for v in images[0]]
            assert attention[word].argmax().item() == max(range(4), key=cosines.__getitem__)


def test_hard_align_trains_a_few_steps_without_nan() -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config("hard_align"),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=VOCAB),
        embed_dim=32,
        num_classes=3,
    )
    model = build_model(config, load_pretrained=False).train()
    gen = torch.Generator().manual_seed(0)
    attention = torch.tensor([[1] * 8, [1] * 6 + [0] * 2, [1] * 5 + [0] * 3, [1] * 3 + [0] * 5])
    batch = Batch(
        torch.randn(4, 3, 64, 32, generator=gen),
        torch.randint(5, VOCAB, (4, 8), generator=gen) * attention,
        attention,
        torch.tensor([0, 1, 2, 0]),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.text_proj.parameters()]
    for _ in range(4):
        losses = model.losses(batch)
        assert set(losses) == {"sdm", "id", "rank"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()  # type: ignore[union-attr]
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.text_proj.parameters(), strict=True))
    model.eval()
    with torch.no_grad():
        scores = model.similarity(
            model.encode_texts(batch.input_ids, batch.attention_mask), model.encode_images(batch.pixels)
        )
    assert scores.shape == (4, 4) and torch.isfinite(scores).all()
