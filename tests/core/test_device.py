"""Device choice, one implementation: `auto` works everywhere, a bad value is a clear error."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flows.config import EmbedSettings, PipelineConfig, load_config
from tasks.core.device import autocast, precision_dtype, resolve_device, resolve_precision
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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel lists them (Linux), independent of torch."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16() -> None:
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert precision_dtype("auto") == (torch.bfloat16 if native else torch.float32)
    with autocast(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"  # as asked


def test_flow_embed_settings_take_auto_and_reject_typos() -> None:
    assert EmbedSettings(device="auto").device == "auto" and EmbedSettings(device="cuda:1").device == "cuda:1"
    with pytest.raises(TbprError, match=r"embed\.device"):
        load_config(PipelineConfig, None, ["embed.device=gpu"])


def test_embed_runs_with_device_auto(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    summary = embed_split(tiny_data, tiny_checkpoint("global"), tmp_path / "emb", device="auto", indexes=())
    assert summary.info.num_images > 0


FAULTS_OF_A_REALLOCATION = """
import resource, sys
import numpy as np
from tasks.core.device import keep_freed_memory
kept = keep_freed_memory(512) if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # three 16 MiB blocks alive together, then freed: like a re-ranking call's tensors
    before = faults()
    blocks = [np.full(2 * 2**20, 1.0) for _ in range(3)]  # float64
    del blocks
print(kept, faults() - before)  # of the last round
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_kept_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    """Three 16 MiB blocks allocated together, again after a free: by glibc's defaults the freed heap
    top (48 MiB) exceeds its trim threshold (twice the largest block), goes back to the kernel, and
    its pages fault in afresh each time (12,288 of 4 KiB, or ~1,000 with transparent huge pages);
    after `keep_freed_memory(512)` the heap is reused."""
    counts = {}
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_OF_A_REALLOCATION, mode], capture_output=True, text=True, check=True
        )
        kept, faults = done.stdout.split()
        counts[mode] = (kept == "True", int(faults))
    assert counts["keep"][0] and not counts["default"][0]
    assert counts["default"][1] >= 100 and 10 * counts["keep"][1] < counts["default"][1], counts
