"""`train_state.json` read back on --resume (`load_train_state`): a document of the wrong shape is a
TbprError naming the file, not a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tasks.core.errors import TbprError
from tasks.tracking.selection import selection_score, smoothed
from tasks.train.state import (
    STATE_JSON,
    EpochRecord,
    TrainState,
    load_train_state,
    save_train_state,
)


def _optimizer() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@pytest.mark.parametrize("damage", ["a_list", "no_state", "history_a_number"])
def test_a_damaged_train_state_is_a_clear_error(damage: str, tmp_path: Path) -> None:
    optimizer, scheduler = _optimizer()
    save_train_state(tmp_path, optimizer, scheduler, TrainState(epoch=1, step=3))
    state = load_train_state(tmp_path, *_optimizer(), torch.device("cpu"))
    assert (state.epoch, state.step) == (1, 3)
    document = json.loads((tmp_path / STATE_JSON).read_text())
    if damage == "a_list":
        document = [document]
    elif damage == "no_state":
        del document["state"]
    else:
        document["state"]["history"] = 5
    (tmp_path / STATE_JSON).write_text(json.dumps(document))
    with pytest.raises(TbprError, match=re.escape(STATE_JSON)):
        load_train_state(tmp_path, *_optimizer(), torch.device("cpu"))


def _state(curve: list[float], smooth: int) -> TrainState:
    records = [EpochRecord(e + 1, 0.0, {}, {"R1": r1}, 1.0, 1.0) for e, r1 in enumerate(curve)]
    return TrainState(epoch=len(curve), history=records, smooth=smooth)


def test_smoothed_is_the_trailing_mean() -> None:
    curve = [10.0, 20.0, 15.0, 40.0, 20.0]
    expected = [10.0, 15.0, 15.0, 25.0, 25.0]  # by hand: means of the last <= 3 values
    assert smoothed(curve, 3) == pytest.approx(expected)
    assert smoothed(curve, 1) == curve and selection_score(curve, 3) == pytest.approx(25.0)


def test_one_lucky_epoch_neither_selects_the_checkpoint_nor_stops_training() -> None:
    # a spike at epoch 3 on a curve still rising: the raw rule selects it and, with patience 2, stops
    # after epoch 5; the 3-epoch smoothed rule selects the best sustained epoch and goes on
    curve = [10.0, 14.0, 30.0, 17.0, 19.0]
    raw, smooth = _state(curve, 1), _state(curve, 3)
    assert raw.best.epoch == 3 and raw.plateaued(2)
    assert smooth.best.epoch == 5 and not smooth.plateaued(2)
    # a true plateau: the smoothed curve stops rising for `patience` epochs (ties stop too)
    flat = _state([10.0, 20.0, 30.0, 30.0, 30.0, 30.0, 30.0], 3)
    assert flat.plateaued(2) and not flat.plateaued(3)
    assert not _state([10.0, 20.0, 30.0, 31.0, 32.0], 3).plateaued(2, min_delta=0.0)
    assert _state([10.0, 20.0, 30.0, 31.0, 32.0], 3).plateaued(1, min_delta=5.0)


def test_the_smoothing_window_is_saved_with_the_state(tmp_path: Path) -> None:
    optimizer, scheduler = _optimizer()
    save_train_state(tmp_path, optimizer, scheduler, _state([1.0, 2.0], 3))
    assert load_train_state(tmp_path, optimizer, scheduler, torch.device("cpu")).smooth == 3
