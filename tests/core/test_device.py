"""Device choice, one implementation: `auto` works everywhere, a bad value is a clear error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flows.config import EmbedSettings, PipelineConfig, load_config
from tasks.core.device import autocast, precision_dtype, resolve_device
from tasks.core.errors import TbprError
from tasks.embed.encode import embed_split


def test_auto_is_cuda_when_torch_sees_one_else_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))


@pytest.mark.parametrize("bad", ["gpu", "", "tpu:0", "cpu:x"])
def test_unknown_devices_are_tbpr_errors(bad: str) -> None:
    with pytest.raises(TbprError, match="device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(TbprError, match="cpu or auto"):
        resolve_device("cuda")


def test_precision_names() -> None:
    assert precision_dtype("bf16") == torch.bfloat16 and precision_dtype("fp32") == torch.float32
    with pytest.raises(TbprError, match="precision"):
        precision_dtype("fp8")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_flow_embed_settings_take_auto_and_reject_typos() -> None:
    assert EmbedSettings(device="auto").device == "auto" and EmbedSettings(device="cuda:1").device == "cuda:1"
    with pytest.raises(TbprError, match=r"embed\.device"):
        load_config(PipelineConfig, None, ["embed.device=gpu"])


def test_embed_runs_with_device_auto(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    summary = embed_split(tiny_data, tiny_checkpoint("global"), tmp_path / "emb", device="auto", indexes=())
    assert summary.info.num_images > 0
