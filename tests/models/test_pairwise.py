"""Pairwise variants: SCAN scorer against a plain per-pair loop, Gumbel top-k selection and gradients,
IRRA's fusion encoder with masked-word prediction, and the three variants inside tiny models.

Why this file is over ~400 lines: the pair scorers share the independent per-pair reference loops
defined here, which each variant's kernels are compared with."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tbpr_models import ModelConfig, RetrievalModel, build_model, variant_config
from tbpr_models.attention import gumbel_topk, masked_mean, masked_softmax
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.variant import HeadDims
from tbpr_models.variants.cross_fusion import CrossFusionHead, mask_tokens
from tbpr_models.variants.cross_scan import AttentionNorm, CrossScanHead, scan_similarity, scan_word_attention
from tbpr_models.variants.hard_topk import (
    HardTopkConfig,
    HardTopkHead,
    Selection,
    topk_match_candidates,
    topk_match_similarity,
)

VOCAB = 50


def _scan_logits(words: torch.Tensor, regions: torch.Tensor, norm: str) -> list[list[float]]:
    """s[l][n] of one caption's real words (L', D) against regions (N, D), by plain loops: the cosine
    (no_norm), or SCAN's clipped_l2norm: LeakyReLU(0.1) of it over the L2 norm, over words, of a region's."""
    cos = [[float(w @ v / (w.norm() * v.norm())) for v in regions] for w in words]
    if norm == "no_norm":
        return cos
    leaky = [[c if c > 0 else 0.1 * c for c in row] for row in cos]
    norms = [math.sqrt(sum(row[n] ** 2 for row in leaky)) + 1e-8 for n in range(len(regions))]
    return [[row[n] / norms[n] for n in range(len(regions))] for row in leaky]


def _scan_pair(
    words: torch.Tensor,
    mask: torch.Tensor,
    regions: torch.Tensor,
    lam: float,
    lse: float,
    norm: str = "no_norm",
) -> float:
    """SCAN t-i score of one pair, written plainly: attended vector, cosine, LogSumExp over real words."""
    total = 0.0
    real_words = words[mask.bool()]
    for w, logits in zip(real_words, _scan_logits(real_words, regions, norm), strict=True):
        z = sum(math.exp(lam * s) for s in logits)
        attended = sum((math.exp(lam * s) / z) * v / v.norm() for s, v in zip(logits, regions, strict=True))
        relevance = float(w @ attended / (w.norm() * attended.norm()))
        total += math.exp(lse * relevance)
    return math.log(total) / lse


def _random_scan_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(5, 6, 8, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 6, generator=gen) > 0.4
    mask[:, 0] = True
    images = torch.randn(7, 4, 8, generator=gen, dtype=torch.float64)
    return text, mask, images


@pytest.mark.parametrize("norm", ["clipped_l2norm", "no_norm"])
@pytest.mark.parametrize("block", [(512, 32), (3, 2), (1, 1)])
def test_scan_similarity_equals_per_pair_loop(block: tuple[int, int], norm: AttentionNorm) -> None:
    text, mask, images = _random_scan_inputs(0)
    got = scan_similarity(
        text, mask, images, lambda_softmax=9.0, lambda_lse=6.0, block=block, attention_norm=norm
    )
    assert got.shape == (5, 7) and got.dtype == torch.float64
    for q in range(5):
        for g in range(7):
            assert got[q, g].item() == pytest.approx(
                _scan_pair(text[q], mask[q], images[g], 9.0, 6.0, norm), abs=1e-10
            )


def test_scan_norms_differ_and_default_is_clipped_l2norm() -> None:
    """The two normalisations give other scores (the test above could not tell them apart otherwise),
    and the head's default is SCAN's published one."""
    text, mask, images = _random_scan_inputs(5)
    clipped = scan_similarity(text, mask, images, attention_norm="clipped_l2norm")
    plain = scan_similarity(text, mask, images, attention_norm="no_norm")
    assert (clipped - plain).abs().max().item() > 1e-3
    assert variant_config("cross_scan").attention_norm == "clipped_l2norm"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="attention_norm"):
        variant_config("cross_scan", attention_norm="l2norm")


def test_scan_similarity_bf16_close_to_fp32() -> None:
    text, mask, images = _random_scan_inputs(1)
    exact = scan_similarity(text.float(), mask, images.float())
    low = scan_similarity(text.bfloat16(), mask, images.bfloat16())
    assert low.dtype == torch.float32
    assert (low - exact).abs().max().item() < 0.05


@pytest.mark.parametrize("norm", ["clipped_l2norm", "no_norm"])
def test_scan_similarity_gradients_match_finite_differences(norm: AttentionNorm) -> None:
    text, mask, images = _random_scan_inputs(2)
    text = text[:2, :3].clone().requires_grad_(True)
    images = images[:3, :2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, v: scan_similarity(t, mask[:2, :3], v, block=(2, 2), attention_norm=norm), (text, images)
    )


@pytest.mark.parametrize("norm", ["clipped_l2norm", "no_norm"])
def test_scan_word_attention_rows(norm: AttentionNorm) -> None:
    text, mask, images = _random_scan_inputs(3)
    attention = scan_word_attention(text[0], mask[0], images[0], attention_norm=norm)
    assert attention.shape == (6, 4)
    torch.testing.assert_close(attention.sum(dim=1), mask[0].to(torch.float64))
    logits = _scan_logits(text[0][mask[0]], images[0], norm)  # (L', N) over the real words only
    expected = torch.softmax(9.0 * torch.tensor(logits, dtype=torch.float64), dim=1)
    torch.testing.assert_close(attention[mask[0]], expected)


def _hard_head(k: int = 3) -> HardTopkHead:
    dims = HeadDims(embed_dim=8, image_grid=(2, 3), max_length=6, vocab_size=VOCAB)
    return HardTopkHead(HardTopkConfig(k_regions=k, k_words=k), dims)


def test_hard_topk_inference_selects_exactly_k_and_matches_loop() -> None:
    head = _hard_head(k=3).eval()
    gen = torch.Generator().manual_seed(0)
    words = torch.randn(4, 6, 8, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1] * 6]).bool()
    regions = torch.randn(5, 6, 8, generator=gen)
    texts = TextFeatures(global_=torch.zeros(4, 8), local=words, mask=mask)
    images = ImageFeatures(global_=torch.zeros(5, 8), local=regions)
    picked_words, picked_regions = head.select_words(texts), head.select_regions(images)
    assert picked_regions.valid.sum(dim=1).tolist() == [3] * 5
    assert picked_words.valid.sum(dim=1).tolist() == [3, 3, 2, 3]  # caption 2 has only two words
    with torch.no_grad():
        word_logits = head.word_scorer(words).squeeze(-1).masked_fill(~mask, -math.inf)
        region_logits = head.region_scorer(regions).squeeze(-1)
        scores = head.similarity(texts, images)
    for q in range(4):
        top_words = [i for i in word_logits[q].argsort(descending=True)[:3].tolist() if mask[q, i]]
        for g in range(5):
            top_regions = region_logits[g].argsort(descending=True)[:3].tolist()
            best = [
                max(float(torch.cosine_similarity(words[q, i], regions[g, n], dim=0)) for n in top_regions)
                for i in top_words
            ]
            assert scores[q, g].item() == pytest.approx(sum(best) / len(best), abs=1e-5)


def test_hard_topk_similarity_under_bf16_autocast_matches_fp32() -> None:
    """Masked regions must be excluded with the matmul's own dtype (bf16 overflowed once)."""
    torch.manual_seed(0)
    words = Selection(
        tokens=torch.randn(3, 4, 8), weight=torch.ones(3, 4), valid=torch.ones(3, 4, dtype=torch.bool)
    )
    valid = torch.tensor([[True, True, False, False]] * 5)
    regions = Selection(tokens=torch.randn(5, 4, 8), weight=valid.float(), valid=valid)
    expected = topk_match_similarity(words, regions)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = topk_match_similarity(words, regions)
    assert torch.allclose(got.float(), expected, atol=0.25)


def test_hard_topk_scores_bf16_features_like_fp32() -> None:
    """`--precision bf16` hands the head bf16 features while its scorers stay float32 (it crashed)."""
    head = _hard_head(k=3).eval()
    torch.manual_seed(1)
    texts = TextFeatures(
        global_=l2(torch.randn(4, 8)), local=torch.randn(4, 6, 8), mask=torch.ones(4, 6, dtype=torch.bool)
    )
    images = ImageFeatures(global_=l2(torch.randn(5, 8)), local=torch.randn(5, 6, 8))
    with torch.no_grad():
        expected = head.similarity(texts, images)
        got = head.similarity(texts.to("cpu", torch.bfloat16), images.to("cpu", torch.bfloat16))
    assert torch.allclose(got.float(), expected, atol=0.05)


def l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_hard_topk_training_gradients_reach_selection_logits() -> None:
    head = _hard_head(k=2).train()
    words = torch.randn(3, 6, 8, requires_grad=True)
    regions = torch.randn(3, 6, 8)
    texts = TextFeatures(global_=torch.zeros(3, 8), local=words, mask=torch.ones(3, 6, dtype=torch.bool))
    images = ImageFeatures(global_=torch.zeros(3, 8), local=regions)
    selection = head.select_regions(images)
    assert selection.weight.detach().sum(dim=1).tolist() == [2.0] * 3  # hard k-hot in the forward pass
    head.similarity(texts, images).sum().backward()
    for scorer in (head.region_scorer, head.word_scorer):
        assert scorer.weight.grad is not None and scorer.weight.grad.abs().sum() > 0


def test_mask_tokens_spares_special_and_padding() -> None:
    torch.manual_seed(0)
    ids = torch.randint(5, VOCAB, (64, 10))
    attention = torch.ones(64, 10, dtype=torch.long)
    attention[:, 7:] = 0
    masked, labels = mask_tokens(ids, attention, mask_token_id=3, vocab_size=VOCAB, mask_prob=0.5)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 6:].any()  # [CLS], [SEP] (position 6), padding
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    share_masked = (masked[chosen] == 3).float().mean().item()
    assert 0.6 < share_masked < 0.95  # 80% become [MASK]


def _tiny_model(variant: str, **variant_settings: object) -> RetrievalModel:
    config = ModelConfig(
        variant=variant_config(variant, **variant_settings),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(
            kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=VOCAB, mask_token_id=3
        ),
        embed_dim=32,
        num_classes=3,
    )
    return build_model(config)


def _batch() -> Batch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (4, 8), generator=gen)
    attention = torch.tensor([[1] * 8, [1] * 6 + [0] * 2, [1] * 5 + [0] * 3, [1] * 8])
    return Batch(
        torch.randn(4, 3, 64, 32, generator=gen), ids * attention, attention, torch.tensor([0, 1, 2, 0])
    )


@pytest.mark.parametrize(
    ("variant", "head_loss", "pairwise"),
    [("cross_scan", "rank", True), ("cross_fusion", "mlm", False), ("hard_topk", "rank", True)],
)
def test_variants_in_tiny_models(variant: str, head_loss: str, pairwise: bool) -> None:
    torch.manual_seed(0)
    model = _tiny_model(variant).train()
    batch = _batch()
    losses = model.losses(batch)
    assert set(losses) == {"sdm", "id", head_loss}
    assert all(torch.isfinite(v) for v in losses.values())
    losses[head_loss].backward()
    trained = [p for p in model.head.parameters()] or list(model.text_proj.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert model.pairwise is pairwise
    model.eval()
    with torch.no_grad():
        texts = model.encode_texts(batch.input_ids[:3], batch.attention_mask[:3])
        images = model.encode_images(batch.pixels)
        scores = model.similarity(texts, images)
    assert scores.shape == (3, 4) and torch.isfinite(scores).all()


def test_cross_fusion_mlm_gradients_reach_fusion_encoder() -> None:
    torch.manual_seed(1)
    model = _tiny_model("cross_fusion").train()
    model.losses(_batch())["mlm"].backward()
    assert isinstance(model.head, CrossFusionHead)
    cross = model.head.fusion.cross.in_proj_weight
    assert cross.grad is not None and cross.grad.abs().sum() > 0
    # only `mlm` was back-propagated: text-encoder gradients come from re-encoding the masked caption
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text_encoder.parameters())


def test_cross_fusion_feature_masking_hides_the_chosen_words_without_re_encoding() -> None:
    torch.manual_seed(1)
    model = _tiny_model("cross_fusion", mask_level="features").train()
    assert isinstance(model.head, CrossFusionHead)
    seen: list[torch.Tensor] = []
    model.head.fusion.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    calls = 0

    def count(module: object, args: object) -> None:
        nonlocal calls
        calls += 1

    model.text_encoder.register_forward_pre_hook(count)
    batch = _batch()
    model.losses(batch)["mlm"].backward()
    assert calls == 1  # the caption's own encoding only: no second pass over masked ids
    words = seen[0]  # (B, L', D): the fusion encoder's input, cut after the batch's last real word
    assert words.shape[1] == int(batch.attention_mask.sum(dim=1).max())
    hidden = (words == model.head.mask_vector.detach()).all(dim=-1)  # (B, L') rows equal to the mask vector
    assert hidden.any() and not (hidden & ~batch.attention_mask.bool()).any()
    for param in (model.head.mask_vector, model.head.fusion.cross.in_proj_weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_masked_softmax_and_mean_ignore_padding() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(x, mask, dim=-1)
    e1, e3 = math.exp(1.0), math.exp(3.0)
    torch.testing.assert_close(weights[0], torch.tensor([e1 / (e1 + e3), 0.0, e3 / (e1 + e3)]))
    torch.testing.assert_close(weights[1], torch.zeros(3))  # no valid entry: zeros, not NaN
    tokens = x.unsqueeze(-1).expand(2, 3, 2)  # (B, L, D)
    torch.testing.assert_close(masked_mean(tokens, mask, dim=1), torch.tensor([[2.0, 2.0], [0.0, 0.0]]))


def test_gumbel_topk_straight_through() -> None:
    logits = torch.randn(4, 7, requires_grad=True)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 2:] = False  # two valid entries only
    hot = gumbel_topk(
        logits, 3, tau=0.5, training=True, mask=mask, generator=torch.Generator().manual_seed(0)
    )
    assert set(hot.detach().unique().tolist()) <= {0.0, 1.0}  # forward: a hard k-hot
    assert hot.detach().sum(dim=1).tolist() == [3.0, 2.0, 3.0, 3.0]
    assert not (hot.detach().bool() & ~mask).any()
    (hot * torch.randn(4, 7)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert (logits.grad[1, 2:] == 0).all()  # masked entries get no gradient
    inference = gumbel_topk(logits, 3, training=False)
    expected = torch.zeros(4, 7).scatter_(1, logits.detach().topk(3, dim=1).indices, 1.0)
    assert torch.equal(inference, expected)


def test_cross_scan_pair_score_adds_the_global_cosine_to_the_scan_score() -> None:
    """similarity = global_weight x cosine(globals) + SCAN, the SCAN part written as a plain loop."""
    text, mask, regions = _random_scan_inputs(3)
    text_global = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    image_global = torch.nn.functional.normalize(torch.randn(7, 8, dtype=torch.float64), dim=-1)
    texts = TextFeatures(global_=text_global, local=text, mask=mask)
    images = ImageFeatures(global_=image_global, local=regions)
    dims = HeadDims(embed_dim=8, image_grid=(2, 2), max_length=6, vocab_size=VOCAB)
    for weight in (0.0, 1.0, 0.5):
        head = CrossScanHead(variant_config("cross_scan", global_weight=weight), dims)  # type: ignore[arg-type]
        got = head.similarity(texts, images)
        for q in range(5):
            for g in range(7):
                expected = weight * float(text_global[q] @ image_global[g]) + _scan_pair(
                    text[q], mask[q], regions[g], 9.0, 6.0, "clipped_l2norm"
                )
                assert got[q, g].item() == pytest.approx(expected, abs=1e-9)


def test_heads_give_word_region_attention_only_where_they_attend() -> None:
    """Heat maps ask the head: SCAN's softmax, hard top-k's one-hot alignment, none for a refiner."""
    torch.manual_seed(0)
    text = TextFeatures(
        global_=torch.randn(1, 8),
        local=torch.randn(1, 6, 8, dtype=torch.float32),
        mask=torch.tensor([[True, True, True, True, False, False]]),
    )
    images = ImageFeatures(global_=torch.randn(1, 8), local=torch.randn(1, 6, 8))
    scan = _tiny_model("cross_scan").head.word_region_attention(text, images)
    assert scan is not None
    torch.testing.assert_close(scan, scan_word_attention(text.local[0], text.mask[0], images.local[0]))
    assert _tiny_model("global").head.word_region_attention(text, images) is None
    head = _hard_head(k=2).eval()
    hard = head.word_region_attention(text, images)
    assert hard is not None and hard.shape == (6, 6)
    words = head.select_words(text)
    assert int(hard.sum()) == int(words.valid.sum()) == 2  # one region per selected word
    assert set(hard.sum(dim=1).tolist()) <= {0.0, 1.0} and hard[~text.mask[0]].sum() == 0
    regions = hard.sum(dim=0).nonzero().flatten()  # every chosen region is one the head selected
    chosen = head.region_scorer(images.local).squeeze(-1)[0].topk(2).indices
    assert set(regions.tolist()) <= set(chosen.tolist())


def test_hard_topk_normalises_local_tokens_unless_they_are_marked_unit() -> None:
    """Compacted features are marked unit (EMB stores them so) and are not normalised again: scaling
    marked tokens scales the attention score, while unmarked ones are normalised to the same scores."""
    head = _hard_head(k=3).eval()
    gen = torch.Generator().manual_seed(4)
    texts = TextFeatures(
        global_=l2(torch.randn(4, 8, generator=gen)),
        local=torch.randn(4, 5, 8, generator=gen),
        mask=torch.ones(4, 5, dtype=torch.bool),
    )
    images = ImageFeatures(
        global_=l2(torch.randn(6, 8, generator=gen)), local=torch.randn(6, 5, 8, generator=gen)
    )
    candidates = torch.tensor([[0, 1], [5, -1], [2, 2], [4, 3]])
    with torch.no_grad():
        small_texts, small_images = head.compact_texts(texts), head.compact_images(images)
        assert small_texts.unit_local and small_images.unit_local and not texts.unit_local
        reference = head.attention_similarity(small_texts, small_images)  # (Q, G)
        for unit, factor in ((True, 2.0), (False, 1.0)):
            scaled = dataclasses.replace(small_images, local=2 * small_images.local, unit_local=unit)
            torch.testing.assert_close(head.attention_similarity(small_texts, scaled), factor * reference)
            got = head.attention_candidates(small_texts, scaled, candidates, 256.0)
            expected = (factor * reference).gather(1, candidates.clamp(min=0))
            torch.testing.assert_close(got, expected.masked_fill(candidates < 0, -torch.inf))


def test_hard_topk_compacted_features_score_like_the_full_ones() -> None:
    """EMB keeps only the selected tokens (`compact_*`); scoring them (every token selected, no top-k,
    no arg-max gather) gives the scores of the full features, exhaustively and per candidate, and the
    straight-through weighted kernel (weights that carry gradients) gives the same numbers."""
    head = _hard_head(k=3).eval()
    gen = torch.Generator().manual_seed(2)
    mask = torch.rand(5, 6, generator=gen) > 0.3
    mask[:, 0], mask[1, 2:] = True, False  # caption 1 has two words: fewer than k
    texts = TextFeatures(
        global_=l2(torch.randn(5, 8, generator=gen)), local=torch.randn(5, 6, 8, generator=gen), mask=mask
    )
    images = ImageFeatures(
        global_=l2(torch.randn(7, 8, generator=gen)), local=torch.randn(7, 6, 8, generator=gen)
    )
    candidates = torch.tensor([[0, 3, 6], [2, -1, 5], [6, 5, 4], [1, 1, 0], [3, -1, -1]])
    with torch.no_grad():
        full = head.similarity(texts, images)  # (Q, G)
        small_texts, small_images = head.compact_texts(texts), head.compact_images(images)
        assert small_texts.local.shape[1] == 3 and small_images.local.shape[1] == 3
        compact = head.similarity(small_texts, small_images)
        per_candidate = head.similarity_candidates(small_texts, small_images, candidates)
        words, regions = head.select_words(texts), head.select_regions(images)
    torch.testing.assert_close(compact, full, rtol=0, atol=1e-6)
    valid = candidates >= 0
    gathered = full.gather(1, candidates.clamp(min=0)).masked_fill(~valid, -torch.inf)
    torch.testing.assert_close(per_candidate, gathered, rtol=0, atol=1e-6)
    # the weighted kernel: the same 0/1 weights, as tensors that require gradients
    weighted = topk_match_similarity(
        Selection(words.tokens, words.weight.clone().requires_grad_(), words.valid),
        Selection(regions.tokens, regions.weight.clone().requires_grad_(), regions.valid),
    )
    torch.testing.assert_close(
        weighted.detach(),
        full - head.config.global_weight * texts.global_ @ images.global_.t(),
        rtol=0,
        atol=1e-6,
    )


def test_hard_topk_candidate_kernels_equal_the_gathered_similarity() -> None:
    """The batched inference kernel (0/1 weights, every region valid) and the weighted one (weights
    that carry gradients, or images with invalid regions) both give `topk_match_similarity` gathered at
    the candidates, -inf at -1, with blocks smaller than the queries."""
    gen = torch.Generator().manual_seed(3)
    word_valid = torch.ones(5, 3, dtype=torch.bool)
    word_valid[1, 2] = False  # a caption with fewer words than k
    words = Selection(l2(torch.randn(5, 3, 8, generator=gen)), word_valid.float(), word_valid)
    candidates = torch.tensor([[0, 3, 6], [2, -1, 5], [6, 5, 4], [1, 1, 0], [3, -1, -1]])
    valid = candidates >= 0
    all_valid = torch.ones(7, 3, dtype=torch.bool)
    some_invalid = all_valid.clone()
    some_invalid[4, 2], some_invalid[6] = False, False  # image 6 has no valid region at all
    for region_valid in (all_valid, some_invalid):
        regions = Selection(l2(torch.randn(7, 3, 8, generator=gen)), region_valid.float(), region_valid)
        full = topk_match_similarity(words, regions)  # (Q, G)
        expected = full.gather(1, candidates.clamp(min=0)).masked_fill(~valid, -torch.inf)
        inference = topk_match_candidates(words, regions, candidates, block_texts=2)
        weighted = topk_match_candidates(
            Selection(words.tokens, words.weight.clone().requires_grad_(), words.valid),
            Selection(regions.tokens, regions.weight.clone().requires_grad_(), regions.valid),
            candidates,
            block_texts=2,
        )
        torch.testing.assert_close(inference, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(weighted.detach(), expected, rtol=0, atol=1e-6)
    assert full[:, 6].eq(0).all()  # no valid region: every word's term is 0
