"""`gpo` (VSE∞'s generalized pooling): weights from rank positions only, checked against direct
computations; the capacity match with the attention heads it is compared with."""

from __future__ import annotations

import pytest
import torch

from tbpr_models import (
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
    build_model,
    parameter_counts,
    variant_config,
)
from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.variants.gpo import TEMPERATURE, GeneralizedPooling, GpoConfig, positional_encoding

B, L, D = 4, 12, 32


def tiny_model(embed_dim: int = D) -> ModelConfig:
    return ModelConfig(
        variant=variant_config("gpo", hidden=16),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=2, heads=2, max_length=L),
        embed_dim=embed_dim,
    )


def direct_weights(pool: GeneralizedPooling, n: int) -> torch.Tensor:
    """(n,) the weights for a set of n elements, from an unpadded GRU pass over n positions."""
    out, _ = pool.gru(positional_encoding(n, pool.positional_dim).unsqueeze(0))  # (1, n, 2H)
    forward, backward = out[0].chunk(2, dim=-1)
    return torch.softmax(pool.score((forward + backward) / 2).squeeze(-1) / TEMPERATURE, dim=0)


def test_positional_encoding_is_the_sinusoid() -> None:
    pe = positional_encoding(5, 8)
    for pos in range(5):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert pe[pos, 2 * i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-6)


def test_weights_depend_on_the_count_only_and_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    pool = GeneralizedPooling(8, 6)
    lengths = torch.tensor([3, 7, 3, 10])
    with torch.no_grad():
        weights = pool.weights(lengths, 10)  # (B, 10)
        for row, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(weights[row, :n], direct_weights(pool, n))
            assert weights[row, n:].abs().sum() == 0
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))


def test_pooling_is_sorted_values_times_rank_weights() -> None:
    torch.manual_seed(1)
    pool = GeneralizedPooling(8, 6)
    tokens = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 1:] = False
    with torch.no_grad():
        pooled = pool(tokens, mask)  # (B, D)
        for row in range(B):
            real = tokens[row][mask[row]]  # (n, D)
            expected = direct_weights(pool, len(real)) @ real.sort(dim=0, descending=True).values
            torch.testing.assert_close(pooled[row], expected)
        garbage = tokens.masked_fill(~mask.unsqueeze(-1), 1e4)  # padding never leaks in
        torch.testing.assert_close(pool(garbage, mask), pooled)
        shuffled = tokens[:, torch.randperm(L)]  # with every element real, order is irrelevant
        torch.testing.assert_close(pool(shuffled), pool(tokens))


def test_flat_scores_make_it_mean_pooling() -> None:
    torch.manual_seed(2)
    pool = GeneralizedPooling(8, 6)
    torch.nn.init.zeros_(pool.score.weight)
    tokens, mask = torch.randn(B, L, D), torch.arange(L).unsqueeze(0) < torch.tensor([[12], [4], [1], [9]])
    with torch.no_grad():
        torch.testing.assert_close(pool(tokens, mask), masked_mean(tokens, mask, dim=1))


def test_head_trains_and_its_globals_are_the_pooled_tokens() -> None:
    torch.manual_seed(3)
    model = build_model(tiny_model())
    pixels = torch.randn(B, 3, 64, 32)
    ids = torch.randint(1000, 2000, (B, L))
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, 6:] = 0
    images = model.encode_images(pixels)
    texts = model.encode_texts(ids * mask, mask)
    head = model.head
    torch.testing.assert_close(images.global_, l2_normalize(head.image_pool(images.local)))
    torch.testing.assert_close(texts.global_, l2_normalize(head.text_pool(texts.local, mask.bool())))
    (texts.global_ @ images.global_.t()).trace().backward()
    assert head.image_pool.gru.weight_hh_l0.grad.abs().sum() > 0
    assert head.text_pool.score.weight.grad.abs().sum() > 0


def test_config_refuses_an_odd_positional_width() -> None:
    with pytest.raises(ValueError, match="positional_dim"):
        GpoConfig(positional_dim=7)


def test_capacity_matches_spatial_and_nonlocal_within_a_quarter() -> None:
    """At the main job's embed_dim (256): gpo's head within +-25% of spatial's and nonlocal's."""

    def head_params(variant: str) -> int:
        config = ModelConfig(
            variant=variant_config(variant), image=tiny_model().image, text=tiny_model().text
        )
        return parameter_counts(config)["head_params"]

    gpo = head_params("gpo")
    hidden, positional = GpoConfig().hidden, GpoConfig().positional_dim
    gru = 2 * 3 * hidden * (positional + hidden + 2)  # both directions: input, hidden weights, 2 biases
    assert gpo == 2 * (gru + hidden)  # two towers, each a GRU and a bias-free linear score
    for variant in ("spatial", "nonlocal"):
        assert 0.75 <= gpo / head_params(variant) <= 1.25, variant
