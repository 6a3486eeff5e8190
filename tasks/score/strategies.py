"""The built-in scoring strategies (registered by name in `tasks.score.strategy`):

| name | first stage | what scores |
| --- | --- | --- |
| exhaustive | none | `model.similarity` on every pair, in memory-bounded blocks (`exhaustive.py`), in shards |
| pruned | EMB's FAISS index, top k | `model.similarity_candidates` on each query's k (`pruned.py`), in shards; `adaptive`: a per-query k, here |
| cascade | another model's EMB and index (`cascade.py`) | this EMB's model on those candidates |
| external | EMB's index | a local cross-encoder on the captions and DATA's images (`external.py`) |

Exhaustive and fixed-k pruned scoring run in shards (`tasks.score.sharded`: one process is one shard);
the others score here (`score`). Each times the same span (first stage + pair scoring) and fills the
same `Scored` fields. In a pruned
job the images outside the candidates rank below them in first-stage order, so every job ranks the
whole gallery. Dimension letters: Q queries, G gallery, k candidates.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import faiss
import numpy as np
import torch

from tasks.core.errors import TbprError
from tasks.embed.index import APPROXIMATE_SCORES, IndexParams
from tasks.embed.store import EmbeddingStore
from tasks.score.cascade import Alignment, align, propose, stage1_similarity
from tasks.score.cost import IndexProbes, WorkCounts, job_work, mean_words
from tasks.score.external import gallery_images, open_reranker, query_texts, rerank_external
from tasks.score.pruned import Candidates, batched_chunk_size, first_stage, rerank, rerank_adaptive
from tasks.score.ranking import global_similarity, rank_pruned
from tasks.score.sharded import score_in_shards
from tasks.score.strategy import LocalJob, Scored, Strategy, register_strategy
from tbpr_models import RetrievalModel

if TYPE_CHECKING:
    from tasks.score.plan import ScorePlan

ADAPTIVE = "{adaptive} is a pruned-scoring option of one process (not with exhaustive or {shards})"
APPROXIMATE = (
    "{adaptive} needs exact first-stage cosines to bound the scores; {kind}'s are approximate: "
    "use {index} flat, hnsw or ivf"
)
CASCADE = (
    "{candidates} (a cascade) is a pruned job of one process: a pruned-scoring option, not with "
    "exhaustive, {shards} or {adaptive} (whose bound needs the re-ranking model's own first stage)"
)
EXTERNAL = (
    "{reranker} re-ranks the top k of EMB's own index: a pruned-scoring option of one process "
    "(not with exhaustive, {shards}, {adaptive} or {candidates})"
)


def work(job: LocalJob, model: RetrievalModel, kind: str | None, pairs: int, **options: Any) -> WorkCounts:
    """The job's counted work per query (`tasks.score.cost.job_work`) from its opened EMB."""
    store, plan = job.store, job.plan
    per_query = pairs / max(1, store.num_texts)
    top_k = None if kind is None else plan.top_k
    words = mean_words(np.asarray(store.text_mask))
    return job_work(model, store.shapes(), words, kind, top_k, per_query, **options)


class Exhaustive(Strategy):
    """Every pair: runs in shards (`tasks.score.shards`: each shard's blocks; one process, one shard)."""

    name = "exhaustive"
    mode = "exhaustive"

    def check(self, plan: ScorePlan) -> None:
        for option, rule in (
            (plan.adaptive, ADAPTIVE),
            (plan.candidates_from, CASCADE),
            (plan.reranker, EXTERNAL),
        ):
            if option:
                raise plan.error(rule)

    def in_shards(self, plan: ScorePlan) -> bool:
        return True

    def score(self, job: LocalJob) -> Scored:
        return score_in_shards(job.plan, job.emb, job.device)


class Pruned(Strategy):
    """FAISS top k by global cosine, re-ranked by the EMB's model; `adaptive`: a per-query k."""

    name = "pruned"
    takes: ClassVar[frozenset[str]] = frozenset({"adaptive"})

    def check(self, plan: ScorePlan) -> None:
        super().check(plan)
        if plan.adaptive and plan.shards > 1:
            raise plan.error(ADAPTIVE)
        if plan.adaptive and plan.index in APPROXIMATE_SCORES:
            raise plan.error(APPROXIMATE)

    def in_shards(self, plan: ScorePlan) -> bool:
        """A fixed k runs in shards (one process: one shard); a per-query k runs here (`score`)."""
        return not plan.adaptive

    def first_index(self, job: LocalJob) -> faiss.Index:
        return job.store.index(job.plan.index)

    def propose(self, job: LocalJob, index: faiss.Index) -> Candidates:
        """Each query's top k (gallery rows of the scored EMB) from the first stage's `index`."""
        return first_stage(index, job.store.text_globals(), job.plan.top_k, IndexParams())

    def stage1(self, job: LocalJob) -> np.ndarray:
        """(Q, G) the first-stage scores that order the images outside the candidates (evaluation only)."""
        return global_similarity(job.store.text_globals(), job.store.image_globals())

    def extra(self, job: LocalJob) -> dict[str, Any]:
        return {}

    def candidates_model(self, job: LocalJob) -> RetrievalModel | None:
        return None

    def score(self, job: LocalJob) -> Scored:
        """A fixed k on the shard rounds (one process: one shard); an adaptive k, or a cascade, here."""
        if self.in_shards(job.plan):
            return score_in_shards(job.plan, job.emb, job.device)
        plan, model, store = job.plan, job.model, job.store
        shapes = store.shapes()
        image_floats = model.head.candidate_image_floats(shapes.regions, shapes.dim)
        chunk = batched_chunk_size(
            plan.top_k, shapes, plan.memory_budget_mb, image_floats, job.dtype.itemsize
        )
        index = self.first_index(job)  # loaded before the span
        start = time.perf_counter()
        with IndexProbes() as probes:
            candidates = self.propose(job, index)
        seconds_stage1 = time.perf_counter() - start
        options: dict[str, Any] = {"device": job.device, "dtype": job.dtype, "chunk": chunk,
                                   "memory_budget_mb": plan.memory_budget_mb, "show_progress": not plan.adaptive}  # fmt: skip
        if plan.adaptive:
            reranked = rerank_adaptive(model, store, candidates, self._bound(job), **options)
            # candidates left unscored rank with the images outside the top k, in first-stage order
            scored = np.where(np.isfinite(reranked.scores), candidates.ids, -1)
            candidates = Candidates(ids=scored, scores=candidates.scores)
        else:
            reranked = rerank(model, store, candidates, **options)
        seconds = time.perf_counter() - start
        ranking = rank_pruned(candidates, reranked, self.stage1(job))
        num_queries = max(1, len(candidates.ids))
        counted = work(
            job, model, plan.index, reranked.pairs_scored, adaptive=plan.adaptive,
            probes_per_query=probes.count / num_queries if probes.count else None,
            candidates_model=self.candidates_model(job),
        )  # fmt: skip
        extra = {
            "rerank_group": chunk,
            "rerank_calls": reranked.calls,
            "rerank_workers": reranked.workers,
            "adaptive": plan.adaptive,
            "mean_k": reranked.pairs_scored / num_queries,
        }
        return Scored(
            ranking, seconds, reranked.pairs_scored, seconds_stage1=seconds_stage1,
            pairs_stage1=len(candidates.ids) * store.num_images if plan.index == "flat" else None,
            candidates_found=int((candidates.ids >= 0).sum()), work=counted, extra=extra | self.extra(job),
        )  # fmt: skip

    def _bound(self, job: LocalJob) -> tuple[float, np.ndarray]:
        """The head's bound on its pair scores from the first-stage score, which a per-query k needs."""
        bound = job.model.head.score_bound(torch.from_numpy(np.array(job.store.text_mask)))
        if bound is None:
            raise TbprError(
                f"{job.store.info.variant} gives no bound on its scores, which a per-query k needs; drop "
                "--adaptive (cross_scan, hard_topk and the cosine heads have one)"
            )
        return bound[0], bound[1].numpy()


class Cascade(Pruned):
    """Another model's EMB (`candidates_from`) proposes, the scored EMB's model re-ranks."""

    name = "cascade"
    takes: ClassVar[frozenset[str]] = frozenset({"candidates"})

    def check(self, plan: ScorePlan) -> None:
        if plan.reranker is not None:
            raise plan.error(EXTERNAL)
        if plan.candidates_from is None:
            raise plan.error(
                "cascade scoring needs {candidates}: the EMB folder that proposes the candidates"
            )
        if plan.adaptive or plan.shards > 1:
            raise plan.error(CASCADE)

    def in_shards(self, plan: ScorePlan) -> bool:
        return False

    def _source(self, job: LocalJob) -> tuple[EmbeddingStore, Alignment]:
        """The candidates EMB opened and aligned with the scored one, once per job."""
        if "cascade" not in job.opened:
            assert job.plan.candidates_from is not None
            source = EmbeddingStore(job.plan.candidates_from)
            job.opened["cascade"] = (source, align(job.store.emb, job.plan.candidates_from))
        return job.opened["cascade"]  # type: ignore[no-any-return]

    def first_index(self, job: LocalJob) -> faiss.Index:
        return self._source(job)[0].index(job.plan.index)

    def propose(self, job: LocalJob, index: faiss.Index) -> Candidates:
        source, alignment = self._source(job)
        return propose(source, alignment, job.plan.top_k, job.plan.index, index)

    def stage1(self, job: LocalJob) -> np.ndarray:
        return stage1_similarity(*self._source(job))

    def extra(self, job: LocalJob) -> dict[str, Any]:
        return candidates_details(self._source(job)[0])

    def candidates_model(self, job: LocalJob) -> RetrievalModel | None:
        return self._source(job)[0].info.load_model(job.device)


class External(Strategy):
    """EMB's index proposes, a local cross-encoder folder (`reranker`) scores the candidates."""

    name = "external"
    takes: ClassVar[frozenset[str]] = frozenset({"reranker"})

    def check(self, plan: ScorePlan) -> None:
        if plan.reranker is None:
            raise plan.error("external scoring needs {reranker}: a local cross-encoder folder")
        if plan.candidates_from is not None or plan.adaptive or plan.shards > 1:
            raise plan.error(EXTERNAL)

    def score(self, job: LocalJob) -> Scored:
        store, plan = job.store, job.plan
        assert plan.reranker is not None
        scorer = open_reranker(plan.reranker, job.device)
        texts, images = query_texts(store.emb), gallery_images(store.emb)
        index = store.index(plan.index)
        start = time.perf_counter()
        candidates = first_stage(index, store.text_globals(), plan.top_k, IndexParams())
        seconds_stage1 = time.perf_counter() - start
        reranked = rerank_external(scorer, texts, images, candidates, show_progress=True)
        seconds = time.perf_counter() - start
        ranking = rank_pruned(
            candidates, reranked, global_similarity(store.text_globals(), store.image_globals())
        )
        # the re-ranker is the scored model, EMB's model the candidates one
        extra = {"reranker": scorer.kind, "rerank_calls": reranked.calls, "model_ref": str(plan.reranker.resolve()),
                 "train_run_id": None, "variant": scorer.kind} | candidates_details(store)  # fmt: skip
        return Scored(
            ranking, seconds, reranked.pairs_scored, seconds_stage1=seconds_stage1,
            pairs_stage1=len(candidates.ids) * store.num_images if plan.index == "flat" else None,
            candidates_found=int((candidates.ids >= 0).sum()), extra=extra,
        )  # fmt: skip


def candidates_details(source: EmbeddingStore) -> dict[str, Any]:
    """What metrics.json and MLflow record of a first stage run by another model: the candidates model."""
    return {
        "candidates": source.info.variant,
        "candidates_emb": str(source.emb.resolve()),
        "candidates_model_ref": source.info.model_ref,
        "candidates_train_run_id": source.info.train_run_id,
    }


for _strategy in (Exhaustive(), Pruned(), Cascade(), External()):
    register_strategy(_strategy)
