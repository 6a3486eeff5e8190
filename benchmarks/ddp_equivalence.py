"""Data-parallel training against one process: the figures behind README "Several GPUs (torchrun)".

Trains one model (`--variant`, default cross_scan: SDM + ID + the ranking loss over the global batch) on
synthetic pedestrians with both towers of a small random CLIP, fp32, first in one process, then with
`torchrun --standalone --nproc_per_node N` (gloo on the CPU), the same global batch, and prints the
per-epoch losses of both, their largest relative difference, the largest relative difference of the
final weights (attention key biases apart: their true gradient is zero), and the seconds each took.

    python benchmarks/ddp_equivalence.py [--processes 2] [--identities 60] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tasks.data.prepare import prepare_dataset
from tasks.data.synth import generate
from tasks.train.config import TrainConfig
from tasks.train.loop import train_variant
from tbpr_models.encoders.hf import save_random_clip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variant", default="cross_scan")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ddp-"))
    os.environ["TBPR_HOME"] = str(work / "home1")
    generate(work / "source", identities=args.identities, seed=0)
    data = work / "data"
    prepare_dataset(work / "source", "cuhk-pedes", data, progress=False)
    clip = save_random_clip(work / "clip", width=64, layers=2, heads=2, patch_size=16, projection_dim=64)
    model = {
        "embed_dim": 64,
        "image": {"kind": "clip", "path": str(clip), "height": 128, "width": 64},
        "text": {"kind": "clip", "path": str(clip), "max_length": 32, "freeze_layers": 0},
    }
    config = TrainConfig(
        variant=args.variant, model=model, epochs=args.epochs, batch_size=16, sampler="identity",
        precision="fp32", num_workers=0, lr=3e-4, device="cpu", output_dir=work / "single",
    )  # fmt: skip
    start = time.perf_counter()
    single = train_variant(data, config, progress=False)
    single_seconds = time.perf_counter() - start
    settings = config.model_dump(mode="json", exclude={"variant", "device", "output_dir"})
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(args.processes), "-m", "tbpr", "train", str(data), "--variant", args.variant, "--device",
         "cpu", "--no-progress", *sets],
        env={**os.environ, "TBPR_HOME": str(work / "home2")}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    ddp_seconds = time.perf_counter() - start
    from mlflow import MlflowClient

    def history(home: str, run_id: str) -> list[float]:
        client = MlflowClient(f"sqlite:///{work / home / 'mlflow.db'}")
        return [
            m.value for m in sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
        ]

    ddp_run = done.stdout.strip().splitlines()[-1]
    one, many = history("home1", single.run_id), history("home2", ddp_run)
    loss_gap = max(abs(a - b) / abs(a) for a, b in zip(one, many, strict=True))
    folder = Path(
        MlflowClient(f"sqlite:///{work / 'home2' / 'mlflow.db'}").get_run(ddp_run).data.tags["checkpoint_dir"]
    )
    last = f"epoch_{args.epochs:03d}"
    a, b = (
        load_file(str(work / "single" / last / "model.safetensors")),
        load_file(str(folder / last / "model.safetensors")),
    )
    gaps = {k: float(((a[k] - b[k]).abs() / (a[k].abs() + 1e-3)).max()) for k in a}
    weight_gap = max(v for k, v in gaps.items() if not k.endswith("self_attn.k_proj.bias"))
    key_bias_gap = max((v for k, v in gaps.items() if k.endswith("self_attn.k_proj.bias")), default=0.0)
    print(f"variant {args.variant}, {len(load_file(str(work / 'single' / last / 'model.safetensors')))} tensors, "
          f"{args.epochs} epochs, global batch 16, torch {torch.__version__}")  # fmt: skip
    print(f"losses, 1 process:  {[round(v, 6) for v in one]}")
    print(f"losses, {args.processes} processes: {[round(v, 6) for v in many]}")
    print(f"largest relative loss difference: {loss_gap:.2e}")
    print(f"largest relative weight difference: {weight_gap:.2e} (attention key biases: {key_bias_gap:.2e})")
    print(f"wall time: 1 process {single_seconds:.1f} s, {args.processes} processes {ddp_seconds:.1f} s "
          "(torchrun start-up included)")  # fmt: skip


if __name__ == "__main__":
    main()
