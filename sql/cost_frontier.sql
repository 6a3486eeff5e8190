-- Where should the expensive model run? Every scoring job of the latest pipeline run (else of the latest
-- standalone jobs), single models and cascades (`candidates`: the variant whose index proposed the top k
-- that `variant` re-ranked), with R1 and mAP (means over seeds, 95% bootstrap intervals over queries and
-- seeds, as in leaderboard.sql), the scoring cost in seconds per 1,000 queries (first stage + re-ranking,
-- mean over seeds; query and gallery embedding not counted) and pairs scored per query, and `pareto`: no
-- other job has both a higher-or-equal R1 and a lower-or-equal cost, one of them strictly.
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), queries AS (
  SELECT out_dir, count(*) AS queries FROM per_query GROUP BY out_dir
), jobs AS (
  SELECT j.dataset, j.parent_run_id, j.variant, j.mode, j.top_k, j."index", j.candidates,
         count(*) AS seeds, avg(j.R1) AS R1_jobs, avg(j.mAP) AS mAP_jobs,
         avg(1000 * j.seconds / coalesce(j.num_queries, q.queries)) AS seconds_per_1k,
         avg(j.pairs_scored / coalesce(j.num_queries, q.queries)) AS pairs_per_query
  FROM scoring_jobs j JOIN latest l ON j.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
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
SELECT CASE WHEN candidates IS NOT NULL THEN candidates || ' -> ' || variant ELSE variant END AS job,
       variant, candidates, mode, top_k, "index", seeds,
       R1, round(R1_low, 2) AS R1_low, round(R1_high, 2) AS R1_high,
       mAP, round(mAP_low, 2) AS mAP_low, round(mAP_high, 2) AS mAP_high,
       seconds_per_1k, pairs_per_query,
       NOT EXISTS (
         SELECT 1 FROM scored o
         WHERE o.R1 >= s.R1 AND o.seconds_per_1k <= s.seconds_per_1k
           AND (o.R1 > s.R1 OR o.seconds_per_1k < s.seconds_per_1k)
       ) AS pareto
FROM scored s
ORDER BY seconds_per_1k, R1 DESC, job;
