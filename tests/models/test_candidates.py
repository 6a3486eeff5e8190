"""`similarity_candidates` of every variant equals `similarity` gathered at the candidates."""

from __future__ import annotations

import pytest
import torch

from tbpr_models import VARIANTS, ModelConfig, RetrievalModel, build_model, variant_config
from tbpr_models import variant as variant_module
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import PairScorerHead, VariantHead, global_cosine_candidates
from tbpr_models.variants.cross_scan import AttentionNorm, scan_similarity, scan_similarity_candidates

QUERIES, GALLERY, K = 7, 9, 5


def _tiny_model(variant: str) -> RetrievalModel:
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=50),
        embed_dim=32,
    )
    return build_model(config, load_pretrained=False).eval()


def _features(model: RetrievalModel) -> tuple[TextFeatures, ImageFeatures]:
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([8, 3, 5, 1, 8, 6, 2])  # (Q,) real tokens, padding after
    mask = torch.arange(8)[None, :] < lengths[:, None]  # (Q, L)
    ids = torch.randint(5, 50, (QUERIES, 8), generator=gen) * mask
    pixels = torch.randn(GALLERY, 3, 64, 32, generator=gen)
    with torch.no_grad():
        return model.encode_texts(ids, mask.long()), model.encode_images(pixels)


def _random_candidates(seed: int, k: int = K) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.stack([torch.randperm(GALLERY, generator=gen)[:k] for _ in range(QUERIES)])  # (Q, k)
    holes = torch.rand(QUERIES, k, generator=gen) < 0.25
    holes[0] = True  # a query with no candidate at all
    return candidates.masked_fill(holes, -1)


def _expected(full: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Gathered by a plain loop: full[q, g] at each candidate g, -inf where there is none."""
    out = torch.full(candidates.shape, -torch.inf, dtype=full.dtype)
    for q in range(candidates.shape[0]):
        for j, g in enumerate(candidates[q].tolist()):
            if g >= 0:
                out[q, j] = full[q, g]
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_similarity_candidates_equals_gathered_similarity(variant: str) -> None:
    model = _tiny_model(variant)
    texts, images = _features(model)
    candidates = _random_candidates(2)
    with torch.no_grad():
        full = model.similarity(texts, images)  # (Q, G)
        # a tiny budget forces one query per block
        for budget in (256.0, 1e-6):
            got = model.similarity_candidates(texts, images, candidates, memory_budget_mb=budget)
            assert got.shape == candidates.shape
            torch.testing.assert_close(got.float(), _expected(full, candidates).float(), rtol=1e-5, atol=1e-5)
    assert torch.isinf(got[0]).all() and (torch.isfinite(got) == (candidates >= 0)).all()


PAIRWISE = sorted(name for name, spec in VARIANTS.items() if spec.head_cls.pairwise)


def test_every_pairwise_variant_is_covered() -> None:
    assert {"cross_scan", "hard_topk"} <= set(PAIRWISE)


@pytest.mark.parametrize("variant", PAIRWISE)
def test_pairwise_candidates_at_global_weight_zero_are_the_attention_score_without_nan(variant: str) -> None:
    """global_weight = 0: each candidate scores the attention alone, a missing one -inf (0 x -inf is not
    computed), equal to `similarity` gathered at the candidates."""
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant, global_weight=0.0),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=50),
        embed_dim=32,
    )
    model = build_model(config, load_pretrained=False).eval()
    texts, images = _features(model)
    candidates = _random_candidates(6)
    with torch.no_grad():
        got = model.head.similarity_candidates(texts, images, candidates)
        assert isinstance(model.head, PairScorerHead)
        attention = model.head.attention_similarity(texts, images)
    assert not torch.isnan(got).any()
    assert (torch.isneginf(got) == (candidates < 0)).all()
    torch.testing.assert_close(got.float(), _expected(attention, candidates).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["clipped_l2norm", "no_norm"])
def test_scan_candidates_with_every_image_as_candidate_equals_scan_similarity_float64(
    norm: AttentionNorm,
) -> None:
    gen = torch.Generator().manual_seed(3)
    text = torch.randn(5, 6, 8, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 6, generator=gen) > 0.4
    mask[:, 0] = True
    mask[4] = False  # a caption with no real word scores -inf everywhere
    images = torch.randn(7, 4, 8, generator=gen, dtype=torch.float64)
    candidates = torch.stack([torch.randperm(7, generator=gen) for _ in range(5)])  # (Q, G) permuted
    full = scan_similarity(text, mask, images, 9.0, 6.0, block=(3, 2), attention_norm=norm)  # (Q, G)
    # one block; a block per image; a table group per block
    for budget_mb, block_mb in ((256.0, 2.0), (256.0, 1e-9), (1e-6, 1e-9)):
        got = scan_similarity_candidates(
            text,
            mask,
            images,
            candidates,
            9.0,
            6.0,
            memory_budget_mb=budget_mb,
            block_mb=block_mb,
            attention_norm=norm,
        )
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, full.gather(1, candidates), rtol=1e-12, atol=1e-12)
        assert torch.isneginf(got[4]).all()


def test_scan_candidates_bf16_close_to_fp32() -> None:
    model = _tiny_model("cross_scan")
    texts, images = _features(model)
    candidates = _random_candidates(4)
    with torch.no_grad():
        exact = model.similarity_candidates(texts, images, candidates)
        low = model.similarity_candidates(
            texts.to("cpu", torch.bfloat16), images.to("cpu", torch.bfloat16), candidates
        )
    assert low.dtype == torch.float32
    finite = candidates >= 0
    assert (low[finite] - exact[finite]).abs().max().item() < 0.05


@pytest.mark.parametrize("variant", ["cross_scan", "hard_topk"])
def test_base_fallback_through_similarity_matches_the_batched_override(variant: str) -> None:
    model = _tiny_model(variant)
    texts, images = _features(model)
    candidates = _random_candidates(5)
    with torch.no_grad():
        batched = model.similarity_candidates(texts, images, candidates)
        for budget in (256.0, 1e-6):
            generic = VariantHead.similarity_candidates(
                model.head, texts, images, candidates, memory_budget_mb=budget
            )
            torch.testing.assert_close(generic.float(), batched.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("gallery", "k", "block_bytes"),
    # dense matmul; gathered globals in one block, one query per block, 3 per block (the last one short)
    [(9, 5, 2**22), (300, 2, 2**22), (300, 2, 1), (300, 2, 3 * 2 * 16 * 4)],
)
def test_global_cosine_candidates_equals_a_loop(
    gallery: int, k: int, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(variant_module, "GATHER_BLOCK_BYTES", block_bytes)
    gen = torch.Generator().manual_seed(6)
    texts = TextFeatures(
        global_=torch.randn(4, 16, generator=gen), local=torch.zeros(4, 1, 16), mask=torch.ones(4, 1)
    )
    images = ImageFeatures(global_=torch.randn(gallery, 16, generator=gen), local=torch.zeros(gallery, 1, 16))
    candidates = torch.randint(0, gallery, (4, k), generator=gen)
    candidates[1, 0] = -1
    got = global_cosine_candidates(texts, images, candidates)
    expected = torch.full((4, k), -torch.inf)
    for q in range(4):
        for j, g in enumerate(candidates[q].tolist()):
            if g >= 0:
                expected[q, j] = float(texts.global_[q].double() @ images.global_[g].double())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
