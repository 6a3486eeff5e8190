"""`cross_fusion`'s masked-word head over the training captions' word pieces (`label_words`): the same
cross-entropy as the whole-vocabulary head restricted to those words, labels mapped to decoder rows,
a word outside them not predicted, and a checkpoint that keeps its words."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tbpr_models import (
    ModelConfig,
    RetrievalModel,
    build_model,
    load_checkpoint,
    save_checkpoint,
    variant_config,
)
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.features import Batch
from tbpr_models.tokenizer import label_vocabulary
from tbpr_models.variants.cross_fusion import IGNORE, CrossFusionHead

VOCAB = 50


def _config(label_words: int = 0) -> ModelConfig:
    return ModelConfig(
        # every ordinary word is chosen and hidden: the labels are the captions' own words
        variant=variant_config("cross_fusion", mask_level="features", mask_prob=1.0),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(
            kind="small", hidden=32, layers=1, heads=2, max_length=8, vocab_size=VOCAB, mask_token_id=3
        ),
        embed_dim=32,
        label_words=label_words,
    )


def _batch() -> Batch:
    """Three captions ([CLS] words [SEP], padding 0) sharing some words; four images."""
    ids = torch.tensor([[1, 7, 9, 12, 9, 2, 0, 0], [1, 12, 30, 41, 7, 30, 8, 2], [1, 44, 9, 2, 0, 0, 0, 0]])
    pixels = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    return Batch(pixels, ids, (ids != 0).long(), torch.tensor([0, 1, 2]))


def _ordinary_words(batch: Batch) -> list[int]:
    """The ids between each caption's first and last real token, caption after caption."""
    out: list[int] = []
    for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), strict=True):
        out += ids[1 : sum(mask) - 1]
    return out


def _decoder_input(model: RetrievalModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mlm loss, the (M, D) states the vocabulary head read)."""
    seen: list[torch.Tensor] = []
    assert isinstance(model.head, CrossFusionHead)
    hook = model.head.mlm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    loss = model.losses(batch)["mlm"]
    hook.remove()
    return loss, seen[0]


def test_the_restricted_head_is_the_whole_vocabulary_cross_entropy_over_the_training_words() -> None:
    batch = _batch()
    ordinary = _ordinary_words(batch)
    words = label_vocabulary(batch.input_ids, batch.attention_mask)
    assert words.tolist() == sorted(set(ordinary))
    torch.manual_seed(0)
    whole = build_model(_config()).eval()  # no dropout: the two fusions see the same inputs
    small = build_model(_config(len(words))).eval()
    state = {k: v for k, v in whole.state_dict().items() if not k.startswith("head.mlm_head.decoder")}
    missing = small.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == [
        "head.label_words",
        "head.mlm_head.decoder.bias",
        "head.mlm_head.decoder.weight",
    ]
    with torch.no_grad():
        small.head.mlm_head.decoder.weight.copy_(whole.head.mlm_head.decoder.weight[words])
        small.head.mlm_head.decoder.bias.copy_(whole.head.mlm_head.decoder.bias[words])
    small.head.set_label_words(words)
    assert small.head.mlm_head.decoder.weight.shape == (len(words), 32)

    loss, states = _decoder_input(small, batch)
    _, whole_states = _decoder_input(whole, batch)
    assert torch.allclose(states, whole_states)  # the same fusion: only the vocabulary head differs
    rows = {w: r for r, w in enumerate(words.tolist())}
    logits = whole.head.mlm_head(whole_states)[:, words]  # (M, V') the whole head's columns of those words
    expected = F.cross_entropy(logits, torch.tensor([rows[w] for w in ordinary]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_labels_map_to_decoder_rows_and_a_word_outside_is_not_predicted() -> None:
    words = torch.tensor([5, 9, 17, 30])
    model = build_model(_config(len(words)))
    assert isinstance(model.head, CrossFusionHead)
    model.head.set_label_words(words)
    labels = torch.tensor([[IGNORE, 9, 5, 6], [30, 17, 31, IGNORE], [4, 5, 49, 0]])
    rows = {5: 0, 9: 1, 17: 2, 30: 3}
    expected = [[rows.get(v, IGNORE) for v in row] for row in labels.tolist()]
    assert model.head._decoder_rows(labels).tolist() == expected


@pytest.mark.parametrize(
    "ids",
    [
        torch.tensor([5, 9, 17]),
        torch.tensor([9, 5, 17, 30]),
        torch.tensor([5, 5, 17, 30]),
        torch.tensor([5, 9, 17, VOCAB]),
    ],
)
def test_label_words_must_fit_the_head_and_the_vocabulary(ids: torch.Tensor) -> None:
    model = build_model(_config(4))
    with pytest.raises(ValueError, match="label words"):
        model.head.set_label_words(ids)
    with pytest.raises(TypeError, match="predicts no words"):
        build_model(dataclasses.replace(_config(), variant=variant_config("global"))).head.set_label_words(
            ids
        )


def test_a_checkpoint_keeps_its_words_and_a_whole_vocabulary_one_has_none(tmp_path: Path) -> None:
    words = torch.tensor([6, 7, 20, 41, 48])
    torch.manual_seed(0)
    model = build_model(_config(len(words)))
    model.head.set_label_words(words)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "small"))
    assert loaded.config.label_words == len(words) and isinstance(loaded.head, CrossFusionHead)
    assert loaded.head.label_words is not None and torch.equal(loaded.head.label_words, words)
    assert torch.equal(loaded.head.mlm_head.decoder.weight, model.head.mlm_head.decoder.weight)
    whole = load_checkpoint(save_checkpoint(build_model(_config()), tmp_path / "whole"))
    assert isinstance(whole.head, CrossFusionHead) and whole.head.label_words is None
    assert whole.head.mlm_head.decoder.weight.shape == (VOCAB, 32)
