-- Does this variant beat the `global` baseline, and how sure are we? For the latest run's reference job
-- (as in leaderboard.sql): mean R1 over seeds, the paired R1 difference to `global` on the same queries
-- and its 95% bootstrap interval over queries and seeds (percentage points). `verdict` says better or worse
-- only when the interval excludes zero; `mde_R1` is the minimal detectable effect (80% power, from the
-- bootstrap), so "not significant" reads "any true difference is likely smaller than mde_R1"
-- (mAP and mINP differences: table variant_stats).
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), reference AS (
  SELECT s.* FROM variant_stats s JOIN latest l ON s.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  QUALIFY dense_rank() OVER (ORDER BY s.mode = 'exhaustive' DESC, s.candidates NULLS FIRST, s.top_k DESC NULLS FIRST, s."index", s.dataset) = 1
)
SELECT variant, seeds, queries, R1_mean, delta_R1, delta_R1_low, delta_R1_high,
       round(delta_R1_mde, 2) AS mde_R1,
       CASE WHEN delta_R1_low > 0 THEN 'better' WHEN delta_R1_high < 0 THEN 'worse'
            ELSE printf('not significant (|dR1| < %.1f likely)', delta_R1_mde) END AS verdict
FROM reference
WHERE delta_R1 IS NOT NULL
ORDER BY delta_R1 DESC, variant;
