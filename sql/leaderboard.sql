-- Which variant retrieves best, how sure are we, and at what scoring cost? Selected on val, never on test:
-- one row per variant of the latest pipeline run (else of the latest standalone jobs), from its
-- val-selected checkpoints (one per seed) scored by the run's reference job (exhaustive when it has one,
-- else the pruned job with the largest k). R1 is the mean over seeds with its 95% bootstrap interval over
-- queries and seeds; dR1 is the paired R1 difference to `global` on the same queries with its interval
-- (percentage points) and mde the smallest difference this design detects (80% power): a dR1_95 that
-- holds zero means "no difference larger than about mde"; epochs is each seed's epochs trained (min..max)
-- and stop why training ended (epochs, plateau, or budget: a wall-clock limit cut it, so that row
-- depends on the machine's speed and is flagged `budget!`); grounding is the mean pointing accuracy of the word-to-region attention (percent of
-- caption words naming a part whose attention peak falls inside that part, on synthetic test images;
-- empty for heads without such attention); seconds is the mean scoring time.
WITH latest AS (
  SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
), reference AS (
  SELECT s.* FROM variant_stats s JOIN latest l ON s.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
  QUALIFY dense_rank() OVER (ORDER BY s.mode = 'exhaustive' DESC, s.candidates NULLS FIRST, s.top_k DESC NULLS FIRST, s."index", s.dataset) = 1
), cost AS (
  SELECT j.variant, avg(j.seconds) AS seconds, avg(g.value) AS grounding,
         min(t.epochs) AS epochs_min, max(t.epochs) AS epochs_max,
         string_agg(DISTINCT t.stop_reason, ',' ORDER BY t.stop_reason) AS stop,
         bool_or(t.stop_reason = 'budget') AS budget
  FROM scoring_jobs j JOIN reference r
    ON j.variant = r.variant AND j.mode = r.mode AND j.parent_run_id IS NOT DISTINCT FROM r.parent_run_id
   AND j.top_k IS NOT DISTINCT FROM r.top_k AND j."index" IS NOT DISTINCT FROM r."index"
   AND j.candidates IS NOT DISTINCT FROM r.candidates
  LEFT JOIN metrics g ON g.run_id = j.model_run_id AND g.key = 'test/grounding'
  LEFT JOIN runs t ON t.run_id = j.model_run_id
  GROUP BY j.variant
)
SELECT r.variant, r.seeds,
       r.R1_mean AS R1,
       printf('%.1f..%.1f', r.R1_low, r.R1_high) AS R1_95,
       r.mAP_mean AS mAP,
       r.delta_R1 AS dR1,
       CASE WHEN r.delta_R1 IS NOT NULL THEN printf('%.1f..%.1f', r.delta_R1_low, r.delta_R1_high) END AS dR1_95,
       round(r.delta_R1_mde, 1) AS mde,
       CASE WHEN c.epochs_min = c.epochs_max THEN c.epochs_min::VARCHAR
            ELSE printf('%d..%d', c.epochs_min, c.epochs_max) END AS epochs,
       CASE WHEN c.budget THEN replace(c.stop, 'budget', 'budget!') ELSE c.stop END AS stop,
       round(c.grounding, 1) AS grounding,
       c.seconds
FROM reference r LEFT JOIN cost c USING (variant)
ORDER BY r.R1_mean DESC, r.variant;
