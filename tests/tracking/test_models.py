"""Checkpoint references: a folder is a checkpoint only when it holds what `save_checkpoint` writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flows.config import EmbedRunConfig, write_config
from tasks.core.errors import TbprError
from tasks.tracking.config import TrackingConfig
from tasks.tracking.models import resolve_checkpoint
from tbpr_models import is_checkpoint


def test_a_checkpoint_folder_resolves_to_itself(tiny_checkpoint: Callable[[str], Path]) -> None:
    folder = tiny_checkpoint("global")
    assert is_checkpoint(folder)
    assert resolve_checkpoint(folder) == (folder, {})
    assert resolve_checkpoint(str(folder)) == (folder, {})


def test_a_flow_output_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    # flows write their run config beside every output: that must not pass for a checkpoint
    out = tmp_path / "emb"
    write_config(EmbedRunConfig(data=tmp_path, model="x", out=out), out)
    (out / "config.json").write_text("{}")  # even a stray config.json alone is not one
    assert not is_checkpoint(out)
    with pytest.raises(TbprError, match="not a checkpoint"):
        resolve_checkpoint(out)


def test_unknown_run_ids_are_tbpr_errors(tmp_path: Path) -> None:
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(TbprError, match="no model found"):
        resolve_checkpoint("0123456789abcdef0123456789abcdef", tracking)
