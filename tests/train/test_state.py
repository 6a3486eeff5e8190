"""`train_state.json` read back on --resume (`load_train_state`): a document of the wrong shape is a
TbprError naming the file, not a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tasks.core.errors import TbprError
from tasks.train.state import STATE_JSON, TrainState, load_train_state, save_train_state


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
