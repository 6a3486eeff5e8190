"""GPU check: what a GPU changes for tbpr, in one run of a few minutes (`benchmarks/gpu_check.sh`).

Prints, on `--device` (CUDA by default): end-to-end training samples/s of two variants in bf16 at the
default model (EfficientNet-Lite0 192x64, MiniLM, D=256) with peak memory; embedding images/s and
captions/s; exhaustive and pruned (top-k of the globals, then the head's re-ranking) scoring pairs/s at
CUHK-PEDES test scale (6,156 queries x 3,074 images); and that CUDA agrees with the CPU on a small case.
With `--clip` (the default), also IRRA's model: `cross_fusion` on both towers of a random CLIP ViT-B/16
(written to a temporary folder) at 384x128, batch 64, bf16, with and without activation checkpointing,
and what one CUHK-PEDES epoch (68,126 training captions) would take at that speed.
Weights are random (`load_pretrained=False`): speed does not depend on them, and the machine needs no
downloads. Only torch, transformers and tbpr_models are needed (no MLflow, FAISS or Prefect). Usage:

    python benchmarks/gpu_check.py [--device cuda] [--steps 20] [--batch 128] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from tasks.core.device import autocast, peak_memory_mb, reset_peak_memory
from tbpr_models import ModelConfig, RetrievalModel, build_model, model_config_from_dict, variant_config
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.scoring import InMemoryFeatures, Shapes, plan_blocks, similarity_in_blocks

WORDS = 40  # caption length in tokens
QUERIES, GALLERY = 6156, 3074  # CUHK-PEDES test: captions, images (--queries, --gallery change them)
NUM_CLASSES = 11003  # CUHK-PEDES training identities


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any], repeat: int) -> float:
    """Seconds per call after one warm-up call."""
    work()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    sync(device)
    return (time.perf_counter() - start) / repeat


def peak_mb(device: torch.device) -> float:
    """MiB: the CUDA allocator's peak (or the process's peak RSS on the CPU) since `reset_peak`."""
    return peak_memory_mb(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)


def model_for(variant: str, num_classes: int = NUM_CLASSES, **overrides: Any) -> ModelConfig:
    return model_config_from_dict({"variant": {"kind": variant}, "num_classes": num_classes, **overrides})


def random_batch(config: ModelConfig, batch: int, device: torch.device) -> Batch:
    return Batch(
        pixels=torch.randn(batch, 3, config.image.height, config.image.width),
        input_ids=torch.randint(1000, config.text.vocab_size, (batch, WORDS)),
        attention_mask=torch.ones(batch, WORDS, dtype=torch.long),
        person_ids=torch.randint(0, max(1, config.num_classes), (batch,)),
    ).to(device)


CUHK_TRAIN_CAPTIONS = 68126


def train_speed(
    variant: str,
    batch: int,
    steps: int,
    device: torch.device,
    config: ModelConfig | None = None,
    checkpointing: bool = False,
) -> dict[str, float]:
    config = config or model_for(variant)
    torch.manual_seed(0)
    model = build_model(config, load_pretrained=False).to(device).train()
    model.set_activation_checkpointing(checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = random_batch(config, batch, device)

    def step() -> None:
        with autocast(device, "bf16"):
            losses = model.losses(data)
        total = torch.stack([v.float() for v in losses.values()]).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    reset_peak(device)
    seconds = timed(device, step, steps)
    return {"samples_per_s": batch / seconds, "peak_mb": peak_mb(device)}


@torch.inference_mode()
def embed_speed(model: RetrievalModel, batch: int, device: torch.device) -> dict[str, float]:
    config = model.config
    pixels = torch.randn(batch, 3, config.image.height, config.image.width, device=device)
    ids = torch.randint(1000, config.text.vocab_size, (batch, WORDS), device=device)
    mask = torch.ones_like(ids)

    def images() -> None:
        with autocast(device, "bf16"):
            model.encode_images(pixels)

    def texts() -> None:
        with autocast(device, "bf16"):
            model.encode_texts(ids, mask)

    return {
        "images_per_s": batch / timed(device, images, 5),
        "captions_per_s": batch / timed(device, texts, 5),
    }


@torch.inference_mode()
def features(model: RetrievalModel, device: torch.device) -> tuple[TextFeatures, ImageFeatures]:
    """Random projected tokens through the head: features with the shapes of CUHK-PEDES test."""
    n, d = model.num_regions, model.config.embed_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    words = torch.randn(QUERIES, WORDS, d, generator=g).to(device)
    lengths = torch.randint(10, WORDS + 1, (QUERIES,), generator=g).to(device)
    mask = torch.arange(WORDS, device=device)[None, :] < lengths[:, None]
    regions = torch.randn(GALLERY, n, d, generator=g).to(device)
    return model.head.texts(words, mask), model.head.images(regions)


@torch.inference_mode()
def scoring_speed(
    model: RetrievalModel, device: torch.device, top_k: int, budget_mb: float
) -> dict[str, float]:
    texts, images = features(model, device)
    shapes = Shapes(QUERIES, GALLERY, WORDS, model.num_regions, model.config.embed_dim)
    plan = plan_blocks(shapes, budget_mb, model.head.pair_floats(WORDS, model.num_regions))

    def scorer(t: TextFeatures, i: ImageFeatures) -> torch.Tensor:
        with autocast(device, "bf16"):
            return model.similarity(t, i)

    source = InMemoryFeatures(texts, images)
    start = time.perf_counter()
    similarity_in_blocks(scorer, source, plan, device=device)
    sync(device)
    exhaustive = time.perf_counter() - start

    def pruned() -> None:
        candidates = (texts.global_ @ images.global_.t()).topk(min(top_k, GALLERY), dim=1).indices  # (Q, k)
        with autocast(device, "bf16"):
            model.similarity_candidates(texts, images, candidates, memory_budget_mb=budget_mb)

    pruned_s = timed(device, pruned, 2)
    return {
        "exhaustive_s": exhaustive,
        "exhaustive_pairs_per_s": QUERIES * GALLERY / exhaustive,
        "pruned_s": pruned_s,
        "pruned_pairs_per_s": QUERIES * min(top_k, GALLERY) / pruned_s,
    }


def agreement(device: torch.device) -> dict[str, float]:
    """Max |CUDA - CPU| of similarity scores and of one training loss, fp32, on a small random model."""
    small = {
        "embed_dim": 32,
        "image": {"kind": "resnet_small", "height": 64, "width": 32, "widths": [8, 16]},
        "text": {"kind": "small", "hidden": 32, "layers": 1, "heads": 2, "max_length": 16},
    }
    out: dict[str, float] = {}
    for variant in ("global", "cross_scan"):
        config = model_for(variant, num_classes=4, **small)
        torch.manual_seed(0)
        cpu = build_model(config, load_pretrained=False).eval()
        gpu = build_model(config, load_pretrained=False).eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.to(device)
        batch = Batch(
            pixels=torch.randn(8, 3, 64, 32),
            input_ids=torch.randint(1000, 2000, (8, 12)),
            attention_mask=torch.ones(8, 12, dtype=torch.long),
            person_ids=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
        )
        with torch.inference_mode():
            a = cpu.similarity(
                cpu.encode_texts(batch.input_ids, batch.attention_mask), cpu.encode_images(batch.pixels)
            )
            on = batch.to(device)
            b = gpu.similarity(
                gpu.encode_texts(on.input_ids, on.attention_mask), gpu.encode_images(on.pixels)
            )
            loss_cpu = sum(cpu.losses(batch).values())
            loss_gpu = sum(gpu.losses(on).values())
        out[f"{variant}_scores_max_abs_diff"] = float((a - b.cpu()).abs().max())
        out[f"{variant}_loss_abs_diff"] = float(abs(float(loss_cpu) - float(loss_gpu)))
    return out


def irra_speed(device: torch.device, steps: int) -> dict[str, Any]:
    """IRRA's training step on a random CLIP ViT-B/16 (both towers), batch 64 at 384x128, bf16."""
    import tempfile
    from pathlib import Path

    from tbpr_models.encoders.hf import save_random_clip

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        clip = save_random_clip(
            Path(folder) / "clip-vit-b16", width=512, vision_width=768, layers=12, heads=8, patch_size=16,
            image_size=224, projection_dim=512, context=77, vocab_size=49408,
        )  # fmt: skip
        config = model_for(
            "cross_fusion",
            embed_dim=512,
            image={"kind": "clip", "path": str(clip), "height": 384, "width": 128},
            text={
                "kind": "clip",
                "path": str(clip),
                "max_length": 77,
                "freeze_embeddings": False,
                "freeze_layers": 0,
            },
        )
        config = dataclasses.replace(config, variant=variant_config("cross_fusion", heads=8, layers=4))
        for checkpointing in (False, True):
            key = f"train_irra_clip_b16{'_checkpointed' if checkpointing else ''}"
            speed = train_speed("cross_fusion", 64, steps, device, config, checkpointing)
            speed["cuhk_epoch_minutes"] = CUHK_TRAIN_CAPTIONS / speed["samples_per_s"] / 60
            report[key] = speed
            print(key, speed, flush=True)
    return report


def main() -> None:
    global QUERIES, GALLERY
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", default="global,cross_scan")
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--budget-mb", type=float, default=8192.0, help="memory budget of a scoring block")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--queries", type=int, default=6156)
    parser.add_argument("--gallery", type=int, default=3074)
    parser.add_argument(
        "--clip", action=argparse.BooleanOptionalAction, default=True, help="IRRA's model too"
    )
    args = parser.parse_args()
    global QUERIES, GALLERY
    QUERIES, GALLERY = args.queries, args.gallery
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    }
    report["torch"] = torch.__version__
    report["scale"] = {"queries": QUERIES, "gallery": GALLERY, "batch": args.batch}
    for variant in args.variants.split(","):
        report[f"train_{variant}"] = train_speed(variant, args.batch, args.steps, device)
        print(variant, "train", report[f"train_{variant}"], flush=True)
        model = build_model(model_for(variant), load_pretrained=False).to(device).eval()
        report[f"embed_{variant}"] = embed_speed(model, 512, device)
        print(variant, "embed", report[f"embed_{variant}"], flush=True)
        reset_peak(device)
        report[f"score_{variant}"] = {
            **scoring_speed(model, device, args.top_k, args.budget_mb),
            "peak_mb": peak_mb(device),
        }
        print(variant, "score", report[f"score_{variant}"], flush=True)
        del model
    if args.clip:
        report |= irra_speed(device, args.steps)
    if device.type == "cuda":
        report["cuda_vs_cpu"] = agreement(device)
        print("cuda vs cpu", report["cuda_vs_cpu"], flush=True)
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
