"""`--set key=value` overrides of the train config."""

from __future__ import annotations

import pytest

from tasks.core.errors import TbprError
from tasks.core.settings import apply_overrides, parse_overrides
from tasks.train.config import TrainConfig


def test_overrides_nest_and_parse_json_values() -> None:
    assert parse_overrides(["model.text.kind=small", "lr=3e-4", "model.image.widths=[8,16]"]) == {
        "model": {"text": {"kind": "small"}, "image": {"widths": [8, 16]}},
        "lr": 3e-4,
    }


def test_apply_overrides_merges_into_nested_model_settings() -> None:
    base = TrainConfig(variant="channel", model={"embed_dim": 64, "text": {"kind": "small"}})
    config = apply_overrides(base, ["model.text.layers=1", "epochs=3", "sampler=identity"])
    assert config.model == {"embed_dim": 64, "text": {"kind": "small", "layers": 1}}
    assert (config.epochs, config.sampler, config.variant) == (3, "identity", "channel")


@pytest.mark.parametrize("pair", ["epochs", "no_such_key=1", "epochs=-1", "sampler=sideways"])
def test_bad_overrides_raise_tbpr_error(pair: str) -> None:
    with pytest.raises(TbprError):
        apply_overrides(TrainConfig(), [pair])
