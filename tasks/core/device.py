"""Device, precision and threads: one place that turns the user's words into torch objects.

`auto` means CUDA when torch sees a GPU, else the CPU; an unavailable or unknown device is a TbprError.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, get_args

import torch

from tasks.core.errors import TbprError

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceName)
# Precision of autocast (training, encoding) or of the pair scorer's features (scoring): bf16 is ~2x
# faster on CPUs with AVX-512 BF16 (benchmarks/scoring.py); fp32 is exact.
Precision = Literal["fp32", "bf16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_device(choice: str | torch.device) -> torch.device:
    """`auto` -> cuda when available, else cpu; `cpu`, `cuda`, `cuda:N`; anything else is a TbprError."""
    if isinstance(choice, torch.device):
        return choice
    name = str(choice).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = name.partition(":")[0]
    if kind not in ("cpu", "cuda"):
        raise TbprError(f"unknown device {choice!r}; use one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise TbprError(f"device {choice!r} was asked for but torch sees no CUDA GPU; use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise TbprError(f"bad device {choice!r} ({exc}); use one of {', '.join(DEVICES)}") from None


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name; an unknown name is a TbprError."""
    if precision not in PRECISIONS:
        raise TbprError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU and CUDA alike, or nothing for fp32."""
    if precision_dtype(precision) == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int | None) -> None:
    """torch and FAISS each bundle an OpenMP runtime: set both when asked (ECOSYSTEM.md)."""
    if threads is None:
        return
    import faiss

    torch.set_num_threads(max(1, threads))
    faiss.omp_set_num_threads(max(1, threads))
