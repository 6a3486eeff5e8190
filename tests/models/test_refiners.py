"""Single-stream refiner variants on tiny random models: shapes, masking, gradients, similarity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tbpr_models import Batch, ImageEncoderConfig, ModelConfig, TextEncoderConfig, build_model, variant_config
from tbpr_models.losses import sdm_loss
from tbpr_models.variants.mixed import MixedHead

REFINERS = ["global", "spatial", "channel", "mixed", "nonlocal", "gpo"]
B, L, D, NUM_CLASSES = 4, 12, 32, 3


def tiny_config(variant: str, num_classes: int = NUM_CLASSES) -> ModelConfig:
    return ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=32, layers=2, heads=2, max_length=L),
        embed_dim=D,
        num_classes=num_classes,
    )


def tiny_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    ids = torch.randint(1000, 2000, (B, L), generator=g) * mask
    return Batch(torch.randn(B, 3, 64, 32, generator=g), ids, mask, torch.tensor([0, 1, 1, 2]))


@pytest.mark.parametrize("variant", REFINERS)
def test_shapes_and_normalised_globals(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant)).eval()
    batch = tiny_batch()
    with torch.no_grad():
        images = model.encode_images(batch.pixels)
        texts = model.encode_texts(batch.input_ids, batch.attention_mask)
        scores = model.similarity(texts, images.select(slice(0, 3)))
    assert not model.pairwise
    assert images.global_.shape == (B, D) and images.local.shape == (B, model.num_regions, D)
    assert model.num_regions == 4 * 2  # 64x32 at stride 16
    assert texts.global_.shape == (B, D) and texts.local.shape == (B, L, D)
    assert torch.equal(texts.mask, batch.attention_mask.bool())
    torch.testing.assert_close(images.global_.norm(dim=-1), torch.ones(B))
    torch.testing.assert_close(texts.global_.norm(dim=-1), torch.ones(B))
    assert scores.shape == (B, 3)
    torch.testing.assert_close(scores, texts.global_ @ images.global_[:3].t())


@pytest.mark.parametrize("variant", REFINERS)
def test_padding_does_not_change_text_global(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant)).eval()
    batch = tiny_batch()
    other_ids = batch.input_ids.clone()
    other_ids[batch.attention_mask == 0] = 2500  # different ids where the mask is 0
    with torch.no_grad():
        a = model.encode_texts(batch.input_ids, batch.attention_mask).global_
        b = model.encode_texts(other_ids, batch.attention_mask).global_
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("variant", REFINERS)
def test_gradients_reach_every_trainable_parameter(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant)).train()
    losses = model.losses(tiny_batch())
    expected = {"sdm", "id"} | ({"part"} if variant == "mixed" else set())
    assert set(losses) == expected
    torch.stack(list(losses.values())).sum().backward()
    # the output bias of an attention scorer shifts every logit of a softmax alike: its gradient is zero
    # in exact arithmetic, and exactly zero or rounding noise depending on the machine's kernels
    shift_invariant = {"head.word_scorer.net.2.bias"}
    dead = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad
        and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
        and name not in shift_invariant
    ]
    assert dead == []


@pytest.mark.parametrize("variant", REFINERS)
def test_losses_under_bf16_autocast(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant, num_classes=0)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.losses(tiny_batch())
    assert "id" not in losses
    total = torch.stack(list(losses.values())).sum()
    assert torch.isfinite(total)
    total.backward()
    assert model.text_proj.weight.grad is not None and model.image_proj.weight.grad is not None


def test_global_similarity_is_cosine_of_mean_pooled_tokens() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("global")).eval()
    batch = tiny_batch()
    with torch.no_grad():
        scores = model.similarity(
            model.encode_texts(batch.input_ids, batch.attention_mask), model.encode_images(batch.pixels)
        )
        image_means = model.image_tokens(batch.pixels).mean(dim=1)  # (B, D)
        words = model.text_tokens(batch.input_ids, batch.attention_mask)  # (B, L, D)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    text_means = torch.stack([words[i, : lengths[i]].mean(dim=0) for i in range(B)])  # (B, D)
    expected = F.cosine_similarity(text_means[:, None, :], image_means[None, :, :], dim=-1)  # (B, B)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_mixed_part_loss_is_sdm_of_part_embeddings() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("mixed")).eval()
    batch = tiny_batch()
    with torch.no_grad():
        losses = model.losses(batch)
        texts = model.encode_texts(batch.input_ids, batch.attention_mask)
        images = model.encode_images(batch.pixels)
        assert isinstance(model.head, MixedHead)
        phrases, parts = model.head.parts(texts, images)  # (B, K, D) each
    k = parts.shape[1]
    per_part = torch.stack(
        [F.normalize(phrases[:, i], dim=-1) @ F.normalize(parts[:, i], dim=-1).t() for i in range(k)]
    )
    cos = per_part.mean(dim=0)  # (B, B): mean over parts of the cosines
    flat_t = F.normalize(phrases, dim=-1).flatten(1)  # (B, K*D)
    flat_i = F.normalize(parts, dim=-1).flatten(1)  # (B, K*D)
    torch.testing.assert_close(F.normalize(flat_t, dim=-1) @ F.normalize(flat_i, dim=-1).t(), cos)
    expected = sdm_loss(flat_t, flat_i, batch.person_ids, model.logit_scale())
    torch.testing.assert_close(losses["part"], expected)


def test_text_tokens_skip_trailing_padding_without_changing_real_tokens() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("global")).eval()
    batch = tiny_batch()
    mask = batch.attention_mask.clone()
    mask[0, 9:] = 0
    mask[2, 9:] = 0  # no caption uses the last 3 positions
    with torch.no_grad():
        tokens = model.text_tokens(batch.input_ids, mask)  # (B, L, D)
        full = model.text_proj(model.text_encoder(batch.input_ids, mask))  # (B, L, D), no trimming
    assert tokens.shape == (B, L, D)
    valid = mask.bool()
    torch.testing.assert_close(tokens[valid], full[valid], rtol=1e-5, atol=1e-5)
    assert tokens[:, 9:].eq(0).all()


@pytest.mark.parametrize("variant", [*REFINERS, "control_aa", "control_top_half"])
def test_training_losses_equal_those_of_every_projected_token(variant: str) -> None:
    """Heads that only mean-pool project the mean token in training (`VariantHead.mean_pooled`): their
    losses and gradients equal those computed from every projected token (float64)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(variant)).double().eval()
    batch = tiny_batch()
    batch = Batch(batch.pixels.double(), batch.input_ids, batch.attention_mask, batch.person_ids)
    losses = model.losses(batch)
    mask = batch.attention_mask.bool()
    images = model.head.images(model.image_tokens(batch.pixels))  # every region projected
    texts = model.head.texts(model.text_tokens(batch.input_ids, batch.attention_mask), mask)
    scale = model.logit_scale()
    sdm = sdm_loss(texts.global_, images.global_, batch.person_ids, scale)
    torch.testing.assert_close(losses["sdm"], sdm, rtol=1e-10, atol=1e-12)
    assert model.head.mean_pooled == (variant in ("global", "control_aa"))
    (grad,) = torch.autograd.grad(losses["sdm"], model.image_proj.weight)
    (expected,) = torch.autograd.grad(sdm, model.image_proj.weight)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)
