"""Counted scoring cost (`tasks.score.cost`): FLOPs per pair against formulas, per-query cost as a
function of the recorded counts, identical between two runs of the same job, a cascade encoding with
both models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tasks.score.cost import encode_flops, pair_flops
from tasks.score.run import score
from tbpr_models import ModelConfig, build_model, variant_config
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.scoring import Shapes

SHAPES = Shapes(num_texts=10, num_images=20, words=6, regions=4, dim=16)


def _model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=32, width=16, widths=(8, 16)),
        text=TextEncoderConfig(kind="small", max_length=8, hidden=16, layers=1, heads=2),
        embed_dim=16,
    )
    return build_model(config, load_pretrained=False).eval()


def test_pair_flops_match_the_scorers_matmuls() -> None:
    dim, words, regions = SHAPES.dim, SHAPES.words, SHAPES.regions
    # the global cosine: one dot product of D per pair, exhaustive or per candidate
    assert pair_flops(_model("global"), SHAPES, 3, None) == 2 * dim  # type: ignore[arg-type]
    assert pair_flops(_model("global"), SHAPES, 3, 5) == 2 * dim  # type: ignore[arg-type]
    # hard_align, exhaustive: each real word (3) against every region (N): 2*3*N*D, plus the global
    # cosine's 2*D; its candidate kernel scores every word slot (L) of the batched queries
    hard_align = _model("hard_align")
    assert pair_flops(hard_align, SHAPES, 3, None) == 2 * 3 * regions * dim + 2 * dim  # type: ignore[arg-type]
    assert pair_flops(hard_align, SHAPES, 3, 5) == 2 * words * regions * dim + 2 * dim  # type: ignore[arg-type]
    # SCAN scores only the real words: more words, more work
    scan = _model("cross_scan")
    assert pair_flops(scan, SHAPES, 6, 5) > pair_flops(scan, SHAPES, 2, 5) > 2 * dim  # type: ignore[arg-type]


def test_encode_flops_grow_with_the_caption() -> None:
    model = _model("global")
    assert encode_flops(model, 8) > encode_flops(model, 4) > 0  # type: ignore[arg-type]


def _recorded(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("variant", "mode"), [("hard_align", "exhaustive"), ("cross_scan", "pruned")])
def test_the_cost_is_a_function_of_counts_and_the_same_in_two_runs(
    variant: str, mode: str, tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb(variant)
    runs = [
        _recorded(score(emb, tmp_path / f"run{i}", mode=mode, top_k=4, track=False).out)  # type: ignore[arg-type]
        for i in (1, 2)
    ]
    first, second = runs
    keys = ("flops_per_query", "flops_encode_query", "flops_stage1_per_query", "flops_per_pair")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}  # whatever the timer said
    queries, images = first["num_queries"], first["num_images"]
    pairs = first["pairs_scored"] / queries
    assert pairs == (images if mode == "exhaustive" else 4)
    stage1 = 0 if mode == "exhaustive" else 2 * 16 * images  # flat: a cosine of D = 16 per gallery image
    assert first["flops_stage1_per_query"] == stage1
    expected = first["flops_encode_query"] + stage1 + pairs * first["flops_per_pair"]
    assert first["flops_per_query"] == pytest.approx(expected)
    # the field's test gallery: one pair per image (exhaustive), or k pairs and a cosine per image
    at_cuhk = first["flops_encode_query"] + (
        3074 * first["flops_per_pair"]
        if mode == "exhaustive"
        else 2 * 16 * 3074 + 4 * first["flops_per_pair"]
    )
    assert first["flops_per_query_cuhk_pedes"] == pytest.approx(at_cuhk)


def test_a_cascade_encodes_the_query_with_both_models(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb, proposer = tiny_emb("cross_scan"), tiny_emb("global")
    alone = _recorded(score(emb, tmp_path / "alone", mode="pruned", top_k=4, track=False).out)
    cascade = _recorded(
        score(emb, tmp_path / "cascade", mode="pruned", top_k=4, candidates_from=proposer, track=False).out
    )
    proposer_alone = _recorded(score(proposer, tmp_path / "global", mode="pruned", top_k=4, track=False).out)
    assert cascade["flops_encode_query"] == alone["flops_encode_query"] + proposer_alone["flops_encode_query"]
    assert cascade["flops_per_query"] > alone["flops_per_query"]
