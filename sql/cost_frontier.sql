-- Where should the expensive model run? Every scoring job of the latest pipeline run (else of the latest
-- standalone jobs), single models and cascades (`candidates`: the variant whose index proposed the top k
-- that `variant` re-ranked), with R1 and mAP (means over seeds, 95% intervals over test persons and
-- seeds, as in leaderboard.sql) and the cost per query in counted work (`tasks/score/cost.py`): GFLOPs of
-- encoding the query with every model the job runs (a cascade: two), the first stage and the pair
-- scoring, mean over seeds. Counts, not timers: the same config gives the same costs and the same
-- `pareto` flag on any machine. `pareto`: no other job has both a higher-or-equal R1 and a lower-or-equal
-- cost, one of them strictly (a job without counts, e.g. scored before they were recorded or by an
-- external re-ranker, has no cost and no flag). `gflops_at_cuhk_pedes`: the same job against the field's
-- test gallery (3,074 images), where pair scoring rather than query encoding decides the cost. Beside:
-- the measured scoring seconds per 1,000 queries (first stage + re-ranking, query encoding not counted)
-- and the pairs scored per query. `job` reads `<candidates> -> <variant> k<k>` for a cascade,
-- `<variant> k<k>` or `<variant> exhaustive`.
WITH queries AS (
  SELECT out_dir, count(*) AS queries FROM per_query GROUP BY out_dir
), jobs AS (
  SELECT j.dataset, j.parent_run_id, j.variant, j.mode, j.top_k, j."index", j.candidates,
         count(*) AS seeds, avg(j.R1) AS R1_jobs, avg(j.mAP) AS mAP_jobs,
         avg(j.flops_per_query) / 1e9 AS gflops_per_query,
         avg(j.flops_per_query_cuhk_pedes) / 1e9 AS gflops_at_cuhk_pedes,
         avg(1000 * j.seconds / coalesce(j.num_queries, q.queries)) AS seconds_per_1k,
         avg(j.pairs_scored / coalesce(j.num_queries, q.queries)) AS pairs_per_query
  FROM scoring_jobs j JOIN latest_run l ON j.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  LEFT JOIN queries q USING (out_dir)
  WHERE j.variant IS NOT NULL AND j.seconds IS NOT NULL
  GROUP BY ALL
), scored AS (
  SELECT j.*, coalesce(s.R1_mean, j.R1_jobs) AS R1, s.R1_low, s.R1_high,
         coalesce(s.mAP_mean, j.mAP_jobs) AS mAP, s.mAP_low, s.mAP_high
  FROM jobs j LEFT JOIN variant_stats s
    ON s.variant = j.variant AND s.dataset IS NOT DISTINCT FROM j.dataset
   AND s.parent_run_id IS NOT DISTINCT FROM j.parent_run_id AND s.mode = j.mode
   AND s.top_k IS NOT DISTINCT FROM j.top_k AND s."index" IS NOT DISTINCT FROM j."index"
   AND s.candidates IS NOT DISTINCT FROM j.candidates
)
SELECT coalesce(candidates || ' -> ', '') || variant
       || CASE WHEN mode = 'exhaustive' THEN ' exhaustive' ELSE ' k' || top_k END
       || CASE WHEN mode = 'pruned' AND "index" <> 'flat' THEN ' ' || "index" ELSE '' END AS job,
       R1, CASE WHEN R1_low IS NOT NULL THEN printf('%.1f..%.1f', R1_low, R1_high) END AS R1_95,
       mAP, CASE WHEN mAP_low IS NOT NULL THEN printf('%.1f..%.1f', mAP_low, mAP_high) END AS mAP_95,
       round(gflops_per_query, 4) AS gflops_per_query, round(gflops_at_cuhk_pedes, 2) AS gflops_at_cuhk_pedes,
       round(seconds_per_1k, 3) AS s_per_1k_queries, round(pairs_per_query, 1) AS pairs_per_query,
       CASE WHEN gflops_per_query IS NOT NULL THEN NOT EXISTS (
         SELECT 1 FROM scored o
         WHERE o.R1 >= s.R1 AND o.gflops_per_query <= s.gflops_per_query
           AND (o.R1 > s.R1 OR o.gflops_per_query < s.gflops_per_query)
       ) END AS pareto,
       seeds
FROM scored s
ORDER BY gflops_per_query NULLS LAST, R1 DESC, job;
