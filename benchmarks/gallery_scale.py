"""Galleries of a million images and beyond: memory and time per stage, measured on 1M and on 1, 2 and 4
shards of a local Dask cluster, extrapolated to 10M and 100M (README, "Galleries beyond one machine").

A synthetic clustered gallery with the real sizes (D = 256 globals: persons of 4 views around a random
direction; queries are noisy views), generated in fixed blocks so that a worker can make exactly its
own shard. Measured at 1M: FAISS `flat` (exact), `ivfpq` (the product's settings) build and search with
the recall of each query's 4 true views within its top k, `hnsw` build and search on 100k (its 1M build
is extrapolated); the sharded first stage (each worker builds its flat index over its shard and
searches; the driver merges) on 1, 2 and 4 shards, checked equal to one flat index; the merge; and,
per query, re-ranking k = 64 candidates with `cross_scan` and `hard_topk` and exhaustive scoring per
pair (both constant in G, from `benchmarks/scoring.py`'s synthetic features). The plan extrapolates
linearly in G from these (printed as "extrapolated").

    python benchmarks/gallery_scale.py [--images 1000000] [--queries 1000] [--k 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from scoring import CUHK, D, L, N, Synthetic, _Rows, clock, run_rerank

from tasks.core.device import set_threads
from tasks.core.shards import Shard, dask_client, gallery_shards
from tasks.embed.index import IndexKind, IndexParams, build_index, pq_shape, search
from tasks.score.pruned import Candidates, first_stage
from tasks.score.shards import merge_candidates
from tbpr_models import ImageEncoderConfig, ModelConfig, TextEncoderConfig, build_model, variant_config
from tbpr_models.scoring import Shapes, plan_blocks, similarity_in_blocks

BLOCK = 4096  # rows generated together (a multiple of the 4 views per person)
VIEWS = 4
NOISE = 0.5
LOCAL_BYTES = (N + 0) * D * 2  # float16 region features per image on disk (EMB/image_local.npy)


def gallery_rows(start: int, stop: int, seed: int = 0) -> np.ndarray:
    """Rows [start, stop) of the clustered gallery (unit float32 (S, D)), the same whoever makes them."""
    parts = []
    for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        rng = np.random.default_rng((seed, block))
        centres = rng.standard_normal((BLOCK // VIEWS, 1, D), dtype=np.float32)
        views = (centres + NOISE * rng.standard_normal((BLOCK // VIEWS, VIEWS, D), dtype=np.float32)).reshape(
            -1, D
        )
        lo, hi = max(start - block * BLOCK, 0), min(stop - block * BLOCK, BLOCK)
        parts.append(views[lo:hi])
    rows = np.concatenate(parts)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def queries_for(images: int, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(queries (Q, D), the gallery row each is a noisy view of)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(images, count, replace=False))
    base = np.concatenate([gallery_rows(r, r + 1) for r in rows])
    noisy = base + 0.02 * rng.standard_normal(base.shape, dtype=np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32), rows


def shard_first_stage(shard: Shard, queries: np.ndarray, k: int) -> tuple[Candidates, float, float]:
    """On a worker: make the shard, index it (flat), search; (candidates in global rows, build s, search s)."""
    import faiss

    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    index = build_index(gallery_rows(shard.start, shard.stop), "flat")
    built = time.perf_counter()
    found = first_stage(index, queries, k)
    searched = time.perf_counter()
    ids = np.where(found.ids >= 0, found.ids + shard.start, -1)
    return Candidates(ids=ids, scores=found.scores), built - start, searched - built


def timed(work, repeat: int = 1) -> tuple[object, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(repeat):
        out = work()
    return out, (time.perf_counter() - start) / repeat


def build_and_search(
    gallery: np.ndarray, kind: IndexKind, queries: np.ndarray, k: int
) -> tuple[faiss.Index, float, np.ndarray, float]:
    """(index, build seconds, top-k ids (Q, k), search seconds) of a FAISS index of `kind`."""
    with clock() as built:
        index = build_index(gallery, kind)
    with clock() as searched:
        _, ids = search(index, queries, k)
    return index, built.wall, ids, searched.wall


def truth_recall(found: np.ndarray, rows: np.ndarray) -> float:
    """Share of each query's 4 true views (its person) within its found ids."""
    person = rows // VIEWS
    hits = [
        len(set(f.tolist()) & set(range(p * VIEWS, p * VIEWS + VIEWS))) / VIEWS
        for f, p in zip(found, person, strict=True)
    ]
    return float(np.mean(hits))


def model_for(variant: str) -> object:
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(widths=(4, 4, 4, 4)),
        text=TextEncoderConfig(kind="small", hidden=16, layers=1, heads=2),
        embed_dim=D,
    )
    return build_model(config, load_pretrained=False).eval()


def per_query_rerank(variant: str, k: int, queries: int = 200) -> float:
    """Seconds per query to re-rank k candidates (random features of the real shapes)."""
    source = Synthetic(5_000, queries, seed=2)
    rng = np.random.default_rng(3)
    ids = np.stack([rng.choice(source.num_images, k, replace=False) for _ in range(queries)])
    candidates = Candidates(ids=ids.astype(np.int64), scores=np.zeros(ids.shape, np.float32))
    model = model_for(variant)
    run_rerank(model, _Rows(source, np.arange(queries)), candidates, 512.0)  # warm-up
    _, seconds = timed(lambda: run_rerank(model, _Rows(source, np.arange(queries)), candidates, 512.0))
    return seconds / queries


def per_pair_exhaustive(variant: str) -> float:
    """Seconds per (query, image) pair of exhaustive scoring, from 2 x 2 full blocks."""
    model = model_for(variant)
    plan = plan_blocks(Shapes(*CUHK, L, N, D), 512.0, model.head.pair_floats(L, N))
    source = Synthetic(2 * plan.gallery_block, 2 * plan.query_block, seed=1)
    _, seconds = timed(
        lambda: similarity_in_blocks(
            model.similarity, source, plan, device=torch.device("cpu"), dtype=torch.float32
        )
    )
    return seconds / (source.num_images * source.num_texts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hnsw-images", type=int, default=100_000)
    args = parser.parse_args()
    set_threads(args.threads)
    G, Q, k = args.images, args.queries, args.k
    print(
        f"gallery {G:,} x D={D} (clustered, {VIEWS} views per person), {Q:,} queries, k={k}, {args.threads} threads"
    )
    queries, rows = queries_for(G, Q)
    with clock() as made:
        gallery = gallery_rows(0, G)
    print(f"made the gallery in {made.wall:.1f} s ({gallery.nbytes / 2**30:.2f} GiB float32)")

    flat, flat_build, flat_ids, flat_search = build_and_search(gallery, "flat", queries, k)
    print(f"flat:  build {flat_build:.1f} s, {G * D * 4 / 2**20:,.0f} MiB, search {flat_search:.2f} s "
          f"({flat_search / Q * 1e3:.2f} ms/query), truth recall@{k} {truth_recall(flat_ids, rows):.3f}")  # fmt: skip
    pq_fast: dict[int, float] = {}
    ivfpq, pq_build, pq_ids, pq_search = build_and_search(gallery, "ivfpq", queries, k)
    m, bits = pq_shape(G, D)
    pq_mib = G * (m * bits / 8 + 8) / 2**20  # codes + ids in the inverted lists
    print(f"ivfpq: build {pq_build:.1f} s, {pq_mib:,.0f} MiB (m={m}, {bits} bits, + ids), search {pq_search:.2f} s "
          f"({pq_search / Q * 1e3:.2f} ms/query), truth recall@{k} {truth_recall(pq_ids, rows):.3f}, "
          f"exact-top-{k} overlap {np.mean([len(set(a) & set(b)) / k for a, b in zip(flat_ids, pq_ids, strict=True)]):.3f}")  # fmt: skip
    for nprobe in (16, 64):
        with clock() as t:
            _, fast_ids = search(ivfpq, queries, k, IndexParams(ivf_nprobe=nprobe))
        pq_fast[nprobe] = t.wall
        print(f"ivfpq, nprobe {nprobe} of {faiss.downcast_index(ivfpq).nlist}: search {t.wall:.2f} s "
              f"({t.wall / Q * 1e3:.2f} ms/query), truth recall@{k} {truth_recall(fast_ids, rows):.3f}")  # fmt: skip
    del ivfpq
    H = min(args.hnsw_images, G)
    small_queries, small_rows = queries_for(H, min(Q, H // 4), seed=4)
    hnsw, hnsw_build, hnsw_ids, hnsw_search = build_and_search(gallery[:H], "hnsw", small_queries, k)
    print(f"hnsw on {H:,}: build {hnsw_build:.1f} s (1M: ~{hnsw_build * G / H:.0f} s, extrapolated linearly), "
          f"{hnsw_search / len(small_queries) * 1e3:.2f} ms/query, truth recall@{k} {truth_recall(hnsw_ids, small_rows):.3f}")  # fmt: skip
    del hnsw, gallery, flat

    shard_rows = {}
    for shards in (1, 2, 4):
        parts = gallery_shards(G, shards)
        start = time.perf_counter()
        with dask_client(shards) as client:
            futures = [client.submit(shard_first_stage, s, queries, k, pure=False) for s in parts]
            results = client.gather(futures)
        lists = [r[0] for r in results]
        with clock() as t:
            merged = merge_candidates(lists, k)
        merge_seconds = t.wall
        wall = time.perf_counter() - start
        same = bool((merged.ids == flat_ids).all())
        shard_rows[shards] = (wall, max(r[1] for r in results), max(r[2] for r in results), merge_seconds)
        print(f"{shards} shard(s) on {min(shards, args.threads)} worker(s): wall {wall:.1f} s (cluster start-up "
              f"included), slowest shard: make+index {max(r[1] for r in results):.1f} s, search "
              f"{max(r[2] for r in results):.2f} s; merge {merge_seconds * 1e3:.1f} ms; equals one flat index: {same}")  # fmt: skip

    print("\nper query, constant in G (random features of the real shapes, 1 process):")
    rerank_s, pair_s = {}, {}
    for variant in ("cross_scan", "hard_topk"):
        rerank_s[variant] = per_query_rerank(variant, k)
        pair_s[variant] = per_pair_exhaustive(variant)
        print(f"  {variant}: re-rank k={k}: {rerank_s[variant] * 1e3:.1f} ms/query; exhaustive: "
              f"{1 / pair_s[variant]:,.0f} pairs/s")  # fmt: skip

    print(f"\nplan for {CUHK[0]:,} queries (CUHK-PEDES' count), pruned k={k}, ivfpq at nprobe 64; per-shard costs scale linearly "
          "with shard size (extrapolated from the measurements above; times are hours of this 2-core machine's "
          "work, divided among the workers):")  # fmt: skip
    flat_per_image_query = flat_search / (G * Q)
    pq_per_image_query = pq_fast[64] / (G * Q)  # nprobe 64: the plan's setting (recall printed above)
    for total in (10_000_000, 100_000_000):
        for index, per, bytes_per, shard in (
            ("flat", flat_per_image_query, D * 4 + 8, 2_500_000),
            ("ivfpq", pq_per_image_query, m + 8, 25_000_000),
        ):
            workers = -(-total // shard)
            stage1_h = per * total * CUHK[0] / 3600
            for variant in ("cross_scan", "hard_topk"):
                rerank_h = rerank_s[variant] * CUHK[0] / 3600
                exhaustive_h = pair_s[variant] * total * CUHK[0] / 3600
                print(f"  {total / 1e6:>4.0f}M {index:5} {variant:10}: {workers:3d} workers, each "
                      f"{min(shard, total) * bytes_per / 2**30:.1f} GiB of index in memory + "
                      f"{min(shard, total) * LOCAL_BYTES / 2**30:,.0f} GiB of local features on disk; "
                      f"stage 1 {stage1_h:.2f} h, re-rank {rerank_h:.3f} h (pruned: {(stage1_h + rerank_h) / workers:.2f} h "
                      f"wall); exhaustive {exhaustive_h:,.0f} h")  # fmt: skip


if __name__ == "__main__":
    main()
