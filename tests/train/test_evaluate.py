"""Pruned evaluation of pairwise heads (`EvalSettings.top_k`): the ranking pruned scoring gives."""

from __future__ import annotations

import pytest
import torch

from tasks.train.evaluate import EvalSettings, pruned_similarity
from tbpr_models import ImageEncoderConfig, ModelConfig, TextEncoderConfig, build_model
from tbpr_models.registry import variant_config

VOCAB = 64


def _features(variant: str, queries: int = 7, images: int = 9) -> tuple[object, object, object]:
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=VOCAB),
        embed_dim=32,
    )
    model = build_model(config).eval()
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 9, (queries,), generator=gen)
    mask = (torch.arange(8) < lengths[:, None]).long()
    with torch.inference_mode():
        texts = model.encode_texts(torch.randint(5, VOCAB, (queries, 8), generator=gen) * mask, mask)
        gallery = model.encode_images(torch.randn(images, 3, 64, 32, generator=gen))
    return model, texts, gallery


@pytest.mark.parametrize("variant", ["cross_scan", "hard_align"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_pruned_order_is_candidates_by_pair_score_then_the_rest_by_cosine(variant: str, k: int) -> None:
    model, texts, images = _features(variant)
    settings = EvalSettings(torch.device("cpu"), precision="fp32")
    order = pruned_similarity(model, texts, images, k, settings).argsort(dim=1, descending=True)
    with torch.inference_mode():
        cosine = (texts.global_ @ images.global_.t()).numpy()  # independent: dense, then sorted by hand
        pair = model.similarity(texts, images).numpy()  # exhaustive pair scores
    for q in range(len(cosine)):
        by_cosine = sorted(range(cosine.shape[1]), key=lambda g: -cosine[q, g])
        candidates, rest = by_cosine[:k], by_cosine[k:]
        expected = sorted(candidates, key=lambda g: -pair[q, g]) + rest
        assert order[q].tolist() == expected


def test_pruned_at_the_whole_gallery_is_the_exhaustive_order() -> None:
    model, texts, images = _features("cross_scan")
    settings = EvalSettings(torch.device("cpu"), precision="fp32")
    pruned = pruned_similarity(model, texts, images, 9, settings).argsort(dim=1, descending=True)
    with torch.inference_mode():
        exhaustive = model.similarity(texts, images).argsort(dim=1, descending=True)
    assert torch.equal(pruned, exhaustive)
