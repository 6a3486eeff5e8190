"""Device, precision and threads: one place that turns the user's words into torch objects.

`auto` means CUDA when torch sees a GPU, else the CPU; an unavailable or unknown device is a TbprError.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from typing import Any, Literal, get_args

import torch

from tasks.core.errors import TbprError

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceName)
# Precision of autocast (training, encoding) or of the pair scorer's features (scoring): bf16 is ~2x
# faster on CPUs with AVX-512 BF16 or AMX (benchmarks/scoring.py), but emulated, 10-30x slower than
# fp32, on CPUs without them (an AVX2-only EPYC: README "Time and storage"); fp32 is exact. `auto`:
# bf16 where the device runs it natively, else fp32 (`resolve_precision`).
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Training may also autocast to fp16, with a gradient scaler: for GPUs without bf16 (before Ampere).
TrainPrecision = Literal["auto", "fp32", "bf16", "fp16"]
AUTOCAST: dict[str, torch.dtype] = {**PRECISIONS, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU from Ampere on, or a CPU with AVX-512
    BF16 or AMX (what oneDNN, torch's CPU matmul library, reports)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> `bf16` where `device` runs it natively, else `fp32`; any other name unchanged. The
    resolved name is what runs record (MLflow params, EMB settings), so a table says what ran."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


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
    """The torch dtype of a precision name (`auto` resolved for the CPU: a run on another device
    resolves it first, `resolve_precision`); an unknown name is a TbprError."""
    precision = resolve_precision(precision, torch.device("cpu"))
    if precision not in PRECISIONS:
        raise TbprError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 (or fp16) autocast on CPU and CUDA alike, or nothing for fp32 (`auto` resolved for `device`)."""
    precision = resolve_precision(precision, device)
    if precision not in AUTOCAST:
        raise TbprError(f"unknown precision {precision!r}; use one of {', '.join(AUTOCAST)}")
    if AUTOCAST[precision] != torch.float32:
        return torch.autocast(device.type, dtype=AUTOCAST[precision])
    return contextlib.nullcontext()


def check_training_precision(device: torch.device, precision: str) -> None:
    """bf16 on a GPU without it is a TbprError that points to fp16."""
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise TbprError(
            f"{torch.cuda.get_device_name(device)} has no bf16; train with precision fp16 (with a "
            "gradient scaler) or fp32"
        )


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of fp16 training (a pass-through for bf16 and fp32, which need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring peak memory anew: CUDA's allocator peak, or this process's peak RSS on Linux
    (`/proc/self/clear_refs`; elsewhere the peak since the process started)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """MiB: the CUDA allocator's peak since `reset_peak_memory`, or this process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def set_threads(threads: int | None) -> None:
    """torch and FAISS each bundle an OpenMP runtime: set both when asked (ECOSYSTEM.md)."""
    if threads is None:
        return
    import faiss

    torch.set_num_threads(max(1, threads))
    faiss.omp_set_num_threads(max(1, threads))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
GLIBC_MAX_MMAP_THRESHOLD_MIB = 32  # the largest mmap threshold glibc accepts on 64-bit


def keep_freed_memory(trim_mib: int) -> bool:
    """From now on in this process, glibc's malloc keeps up to `trim_mib` of freed heap for reuse and
    serves blocks up to 32 MiB from the heap, instead of handing large freed blocks back to the kernel.

    Scoring allocates tens of MB of short-lived tensors per call; with glibc's defaults every call
    faulted them in afresh (29-64 ms per `hard_topk` re-ranking call instead of 23-25 ms, measured on
    repeated calls). `score` keeps at most its memory budget this way, so a process that scores (a
    pipeline, a worker) holds no more than scoring was allowed to use. Process-wide, and it stays:
    glibc has no way back to its adaptive thresholds. False (nothing changed) without glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap = mallopt(M_MMAP_THRESHOLD, GLIBC_MAX_MMAP_THRESHOLD_MIB << 20)
    return bool(mmap) and bool(mallopt(M_TRIM_THRESHOLD, max(1, int(trim_mib)) << 20))
