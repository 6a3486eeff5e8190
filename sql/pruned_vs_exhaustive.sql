-- What does pruning (FAISS top-k, then re-ranking) cost in R1, and how much faster is it?
-- Per variant, pipeline run, k and index: pruned R1 minus exhaustive R1 (percentage points),
-- the speed-up in seconds and the fraction of (query, image) pairs scored.
WITH exhaustive AS (
  SELECT parent_run_id, variant, model_run_id, R1, seconds, pairs_scored
  FROM scoring_jobs WHERE mode = 'exhaustive'
  QUALIFY row_number() OVER (PARTITION BY parent_run_id, variant, model_run_id ORDER BY start_time DESC) = 1
)
SELECT p.variant, p.top_k, p."index",
       e.R1 AS exhaustive_R1, p.R1 AS pruned_R1,
       p.R1 - e.R1 AS delta_R1,
       e.seconds AS exhaustive_seconds, p.seconds AS pruned_seconds,
       e.seconds / nullif(p.seconds, 0) AS speedup,
       p.pairs_scored / nullif(e.pairs_scored, 0) AS pairs_fraction,
       p.parent_run_id
FROM scoring_jobs p
JOIN exhaustive e USING (parent_run_id, variant, model_run_id)
WHERE p.mode = 'pruned'
ORDER BY p.variant, p.top_k, p."index";
