-- Does a learned pooling or an attention head beat the mean (`global`), for this run's whole family of
-- comparisons? For the latest run's reference job (as in leaderboard.sql): every other variant's paired
-- R1 difference to `global` on the same queries (percentage points), its standard error over test
-- persons and seeds, the unadjusted 95% interval and p, and Holm's correction across the family
-- (p_holm, the adjusted interval holm_low..holm_high: significant exactly when it excludes zero).
-- `verdict` is better or worse when significant after Holm, else the adjusted interval: the true
-- difference is between its ends. `mde` is the design's power figure (the true difference detected 4
-- times in 5 at Holm's strictest level), not a bound on the difference (table variant_tests; mAP and
-- mINP differences, unadjusted: table variant_stats).
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), reference AS (
  SELECT t.* FROM variant_tests t JOIN latest l ON t.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  WHERE t.reference = 'global' AND t.metric = 'R1'
  QUALIFY dense_rank() OVER (ORDER BY t.mode = 'exhaustive' DESC, t.candidates NULLS FIRST, t.top_k DESC NULLS FIRST, t."index", t.dataset) = 1
)
SELECT t.variant, s.seeds, s.queries, s.persons, s.R1_mean, t.delta AS delta_R1, round(t.se, 2) AS se,
       t.low AS delta_R1_low, t.high AS delta_R1_high, t.p, t.p_holm, t.holm_low, t.holm_high,
       t.family_size, round(t.mde, 2) AS mde, t.verdict
FROM reference t JOIN variant_stats s
  ON s.variant = t.variant AND s.dataset IS NOT DISTINCT FROM t.dataset
 AND s.parent_run_id IS NOT DISTINCT FROM t.parent_run_id AND s.mode = t.mode
 AND s.top_k IS NOT DISTINCT FROM t.top_k AND s."index" IS NOT DISTINCT FROM t."index"
 AND s.candidates IS NOT DISTINCT FROM t.candidates
ORDER BY t.delta DESC, t.variant;
