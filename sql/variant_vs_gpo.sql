-- Does content attention beat a learned pooling of the same capacity (`gpo`, VSE∞'s generalized
-- pooling: weights over the rank order of each dimension's values, never over content)? As
-- variant_vs_global.sql, for the family of attention variants (every variant but `global`, `gpo` and the
-- controls) against `gpo`: paired R1 difference, its unadjusted 95% interval and p, Holm's p_holm and
-- adjusted interval; `verdict` better or worse when significant after Holm, else the adjusted interval;
-- `mde` the design's power figure, not a bound on the difference.
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), reference AS (
  SELECT t.* FROM variant_tests t JOIN latest l ON t.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  WHERE t.reference = 'gpo' AND t.metric = 'R1'
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
