"""Pictures of a pipeline run: CMC curves per variant, R1 against scoring cost, attention heat maps.

Drawn with matplotlib's object API (`Figure`, no pyplot state), so tasks may draw in threads.
Dimension letters: Q queries, G gallery, N image regions, L words, D dim.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from matplotlib.figure import Figure
from PIL import Image

from tasks.core.device import resolve_device
from tasks.data.layout import IMAGES
from tasks.data.reader import decode_image
from tasks.embed.layout import GALLERY, QUERIES, EmbedInfo
from tasks.report.vocabulary import VOCABULARY
from tasks.score.layout import RANKINGS
from tbpr_models import build_tokenizer, image_transform

log = logging.getLogger(__name__)

CMC_PNG = "cmc.png"  # the pictures of a run's plots folder
COST_PNG = "r1_vs_cost.png"
GROUNDING_PNG = "grounding.png"
VAL_CURVES_PNG = "val_curves.png"


def attention_png(variant: str, caption_id: int) -> str:
    return f"attention_{variant}_q{caption_id}.png"


@dataclass(frozen=True)
class CostPoint:
    """One scoring job on the R1-against-cost plot."""

    variant: str
    job: str  # e.g. "exhaustive", "pruned-k50-flat"
    R1: float
    seconds: float


def first_match_ranks(rankings: Path, emb: Path) -> np.ndarray:
    """(Q,) rank (1-based) of each query's first correct image in `rankings`; 0 when not in it.

    Queries and their person ids come from `EMB/queries.parquet`, image person ids from
    `EMB/gallery.parquet`, so a query missing from the rankings counts as a miss.
    """
    queries = pq.read_table(emb / QUERIES, columns=["caption_id", "person_id"]).to_pydict()
    gallery = pq.read_table(emb / GALLERY, columns=["image_id", "person_id"]).to_pydict()
    image_pid = dict(zip(gallery["image_id"], gallery["person_id"], strict=True))
    query_pid = dict(zip(queries["caption_id"], queries["person_id"], strict=True))
    table = pq.read_table(rankings, columns=["query_id", "rank", "image_id"]).to_pydict()
    first: dict[int, int] = {}
    for query, rank, image in zip(table["query_id"], table["rank"], table["image_id"], strict=True):
        if image_pid.get(image) == query_pid.get(query) and (query not in first or rank < first[query]):
            first[query] = rank
    return np.array([first.get(q, 0) for q in queries["caption_id"]], dtype=np.int64)


def cmc_from_rankings(rankings: Path, emb: Path, max_rank: int = 20) -> np.ndarray:
    """CMC in percent: entry r-1 is the share of queries with a correct image in the top r."""
    first = first_match_ranks(rankings, emb)
    ranks = np.arange(1, max_rank + 1)
    hit = (first[None, :] >= 1) & (first[None, :] <= ranks[:, None])  # (max_rank, Q)
    return 100.0 * hit.mean(axis=1)


def cmc_plot(jobs: Mapping[str, tuple[Path, Path]], out: Path, max_rank: int = 20) -> Path:
    """One CMC curve per label; `jobs` maps a label (variant) to (score out dir, EMB dir)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ranks = np.arange(1, max_rank + 1)
    for label, (score_dir, emb) in sorted(jobs.items()):
        curve = cmc_from_rankings(score_dir / RANKINGS, emb, max_rank)
        ax.plot(ranks, curve, marker=".", label=f"{label} (R1 {curve[0]:.1f})")
    ax.set(xlabel="rank", ylabel="matches within rank (%)", title="CMC (test)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def cost_plot(points: Sequence[CostPoint], out: Path) -> Path:
    """R1 against scoring seconds (log scale), one marker per job, a line per variant."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for variant in sorted({p.variant for p in points}):
        mine = sorted((p for p in points if p.variant == variant), key=lambda p: p.seconds)
        ax.plot([p.seconds for p in mine], [p.R1 for p in mine], marker="o", label=variant)
        for p in mine:
            ax.annotate(p.job, (p.seconds, p.R1), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="scoring time (s)", ylabel="R1 (%)", title="R1 against scoring cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def grounding_plot(points: Mapping[str, Sequence[tuple[float, float]]], out: Path) -> Path:
    """Pointing accuracy per variant: one dot per seed, a bar at their mean, and the chance level of a
    uniformly random region (`points`: variant -> [(accuracy, chance) per seed], percent)."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    variants = sorted(points)
    for x, variant in enumerate(variants):
        accuracy = [a for a, _ in points[variant]]
        chance = float(np.mean([c for _, c in points[variant]]))
        ax.bar(x, float(np.mean(accuracy)), width=0.6, color="tab:blue", alpha=0.6)
        ax.scatter([x] * len(accuracy), accuracy, color="tab:blue", zorder=3, s=14)
        ax.hlines(
            chance, x - 0.35, x + 0.35, color="black", linestyles="dashed", label="_" if x else "chance"
        )
    ax.set_xticks(range(len(variants)), variants)
    ax.set(
        ylabel="pointing accuracy (%)",
        ylim=(0, 100),
        title="Does the attention look at the part a word names?",
    )
    ax.grid(alpha=0.3, axis="y")
    if variants:
        ax.legend(fontsize="small")
    return save_figure(fig, out)


def val_curves_plot(curves: Mapping[str, Sequence[Sequence[float]]], out: Path) -> Path:
    """Val R1 per epoch of every variant (`curves`: variant -> one curve per seed): a thin line per
    seed, a thick one for their mean, one panel per variant on a shared scale, so a reader sees that
    each head learned and where it flattened."""
    variants = sorted(curves)
    columns = min(4, max(1, len(variants)))
    rows = -(-len(variants) // columns) or 1
    fig = Figure(figsize=(2.6 * columns, 2.1 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).reshape(-1)
    for ax, variant in zip(axes, variants, strict=False):
        seeds = [list(c) for c in curves[variant] if len(c)]
        for curve in seeds:
            ax.plot(range(1, len(curve) + 1), curve, color="tab:blue", alpha=0.35, linewidth=0.8)
        longest = max((len(c) for c in seeds), default=0)
        mean = [float(np.mean([c[e] for c in seeds if len(c) > e])) for e in range(longest)]
        ax.plot(range(1, longest + 1), mean, color="tab:blue", linewidth=2)
        ax.set_title(variant, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(variants) :]:
        ax.axis("off")
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel("val R1 (%)", fontsize=9)
    fig.suptitle("Val R1 per epoch (thin: each seed; thick: their mean)", fontsize=10)
    return save_figure(fig, out)


def region_grid(regions: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == regions whose aspect ratio is closest to the image's."""
    pairs = [(r, regions // r) for r in range(1, regions + 1) if regions % r == 0]
    return min(pairs, key=lambda rc: abs(np.log(rc[0] / rc[1]) - np.log(height / width)))


def attention_maps(
    emb: Path, out_dir: Path, queries: int = 3, device: str = "cpu", max_words: int = 6
) -> list[Path]:
    """Heat maps of words over image regions for the first `queries` test queries of `emb`.

    One PNG per query: its true image, then one overlay per word (attribute words first). The
    attention is the variant's own (`VariantHead.word_region_attention`); a variant without
    word-over-region attention gets no heat map (an empty list).
    """
    info = EmbedInfo.read(emb)
    torch_device = resolve_device(device)
    model = info.load_model(torch_device)
    rows = pq.read_table(emb / QUERIES, columns=["caption_id", "image_id", "text"]).slice(0, queries)
    picked = rows.to_pylist()
    images = _images(info.data_folder(), [r["image_id"] for r in picked])
    tokenizer = build_tokenizer(model.config.text)
    input_ids, mask = tokenizer([r["text"] for r in picked])
    transform = image_transform(model.config.image)
    pixels = torch.stack([transform(images[r["image_id"]]) for r in picked]).to(torch_device)  # (B, 3, H, W)
    paths = []
    with torch.inference_mode():
        image_features = model.encode_images(pixels)
        text_features = model.encode_texts(input_ids.to(torch_device), mask.to(torch_device))
        for i, row in enumerate(picked):
            attention = model.head.word_region_attention(
                text_features.select(slice(i, i + 1)), image_features.select(slice(i, i + 1))
            )  # (L, N) or None
            if attention is None:
                log.info("variant %s has no word-over-region attention: no heat maps", info.variant)
                return []
            tokens = tokenizer.backend.convert_ids_to_tokens(input_ids[i].tolist())
            words = _pick_words(tokens, mask[i].tolist(), max_words)
            out = out_dir / attention_png(info.variant, row["caption_id"])
            heat = attention.float().cpu().numpy()
            paths.append(_draw_attention(images[row["image_id"]], row["text"], words, tokens, heat, out))
    return paths


def _images(data: Path, image_ids: list[int]) -> dict[int, Image.Image]:
    table = pq.read_table(
        data / IMAGES, columns=["image_id", "image"], filters=[("image_id", "in", image_ids)]
    )
    return {
        int(i): decode_image(b)
        for i, b in zip(table["image_id"].to_pylist(), table["image"].to_pylist(), strict=True)
    }


def _pick_words(tokens: list[str], mask: list[int], max_words: int) -> list[int]:
    """Positions of up to `max_words` word tokens: colour/garment words first, then the others."""
    vocabulary = {word for word, _ in VOCABULARY}
    positions = [
        p for p, (t, m) in enumerate(zip(tokens, mask, strict=True)) if m and not t.startswith(("[", "##"))
    ]
    ordered = [p for p in positions if tokens[p] in vocabulary] + [
        p for p in positions if tokens[p] not in vocabulary
    ]
    return sorted(ordered[:max_words])


def _draw_attention(
    image: Image.Image, text: str, words: list[int], tokens: list[str], attention: np.ndarray, out: Path
) -> Path:
    width, height = image.size
    grid = region_grid(attention.shape[1], height, width)
    fig = Figure(figsize=(1.3 * (len(words) + 1), 3.2), layout="constrained")
    axes = fig.subplots(1, len(words) + 1, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=7)
    for ax, position in zip(axes[1:], words, strict=True):
        heat = attention[position].reshape(grid)  # (N,) -> (rows, cols)
        ax.imshow(image)
        ax.imshow(heat, cmap="jet", alpha=0.5, extent=(0, width, height, 0), interpolation="bilinear")
        ax.set_title(tokens[position], fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(text if len(text) < 90 else text[:87] + "...", fontsize=7)
    return save_figure(fig, out)


def save_figure(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    log.info("wrote %s", out)
    return out
