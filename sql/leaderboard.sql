-- Which variant retrieves best, how sure are we, and at what scoring cost? Selected on val, never on test:
-- one row per variant of the latest pipeline run (else of the latest standalone jobs), from its
-- val-selected checkpoints (one per seed) scored by the run's reference job (exhaustive when it has one,
-- else the pruned job with the largest k). R1 is the mean over seeds with its 95% bootstrap interval over
-- queries and seeds; dR1 is the paired R1 difference to `global` on the same queries with its interval
-- (percentage points); grounding is the mean pointing accuracy of the word-to-region attention (percent of
-- caption words naming a part whose attention peak falls inside that part, on synthetic test images;
-- empty for heads without such attention); seconds is the mean scoring time.
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), reference AS (
  SELECT s.* FROM variant_stats s JOIN latest l ON s.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  QUALIFY dense_rank() OVER (ORDER BY s.mode = 'exhaustive' DESC, s.top_k DESC NULLS FIRST, s."index", s.dataset) = 1
), cost AS (
  SELECT j.variant, avg(j.seconds) AS seconds, avg(g.value) AS grounding
  FROM scoring_jobs j JOIN reference r
    ON j.variant = r.variant AND j.mode = r.mode AND j.parent_run_id IS NOT DISTINCT FROM r.parent_run_id
   AND j.top_k IS NOT DISTINCT FROM r.top_k AND j."index" IS NOT DISTINCT FROM r."index"
  LEFT JOIN metrics g ON g.run_id = j.model_run_id AND g.key = 'test/grounding'
  GROUP BY j.variant
)
SELECT r.variant, r.seeds,
       r.R1_mean AS R1,
       printf('%.1f..%.1f', r.R1_low, r.R1_high) AS R1_95,
       r.mAP_mean AS mAP,
       r.delta_R1 AS dR1,
       CASE WHEN r.delta_R1 IS NOT NULL THEN printf('%.1f..%.1f', r.delta_R1_low, r.delta_R1_high) END AS dR1_95,
       round(c.grounding, 1) AS grounding,
       c.seconds
FROM reference r LEFT JOIN cost c USING (variant)
ORDER BY r.R1_mean DESC, r.variant;
