-- Which variant retrieves best, how sure are we, and at what scoring cost? Selected on val, never on test:
-- one row per variant of the latest pipeline run (else of the latest standalone jobs), from its
-- val-selected checkpoints (one per seed) scored by the run's reference job (exhaustive when it has one,
-- else the pruned job with the largest k). params: the head's trainable parameters (trainable: the whole
-- model's). R1 is the mean over seeds with its 95% interval over test persons and seeds; dR1 is the paired
-- R1 difference to `global` on the same queries (percentage points) with its Holm-adjusted 95% interval
-- across the run's family of comparisons with `global`, vs_global its verdict (better, worse, n.s.: not
-- significant, the true difference lies in the interval); dR1_gpo, its interval and vs_gpo the same
-- against `gpo` (learned pooling without content attention) for the attention variants, corrected across
-- their own family; p_* are Holm-adjusted p-values. mde is the design's power figure (the difference to
-- `global` found 4 times in 5 at Holm's strictest level), not a bound on the difference. epochs is
-- each seed's epochs trained (min..max) and stop why training ended (epochs, plateau, or budget: a
-- wall-clock limit cut it, so that row depends on the machine's speed and is flagged `budget!`);
-- grounding is the mean pointing accuracy of the word-to-region attention (percent of caption words
-- naming a part whose attention peak falls inside that part, on synthetic test images; empty for heads
-- without such attention); seconds is the mean scoring time.
WITH cost AS (
  SELECT j.variant, avg(j.seconds) AS seconds, avg(g.value) AS grounding,
         min(t.epochs) AS epochs_min, max(t.epochs) AS epochs_max,
         string_agg(DISTINCT t.stop_reason, ',' ORDER BY t.stop_reason) AS stop,
         bool_or(t.stop_reason = 'budget') AS budget,
         max(TRY_CAST(hp.value AS BIGINT)) AS head_params, max(TRY_CAST(tp.value AS BIGINT)) AS trainable
  FROM scoring_jobs j JOIN reference_stats r
    ON j.variant = r.variant AND j.mode = r.mode AND j.parent_run_id IS NOT DISTINCT FROM r.parent_run_id
   AND j.top_k IS NOT DISTINCT FROM r.top_k AND j."index" IS NOT DISTINCT FROM r."index"
   AND j.candidates IS NOT DISTINCT FROM r.candidates
  LEFT JOIN metrics g ON g.run_id = j.model_run_id AND g.key = 'test/grounding'
  LEFT JOIN runs t ON t.run_id = j.model_run_id
  LEFT JOIN params hp ON hp.run_id = j.model_run_id AND hp.key = 'head_params'
  LEFT JOIN params tp ON tp.run_id = j.model_run_id AND tp.key = 'trainable_params'
  GROUP BY j.variant
)
SELECT r.variant,
       CASE WHEN c.head_params >= 1000000 THEN printf('%.1fM', c.head_params / 1e6)
            WHEN c.head_params >= 1000 THEN printf('%dk', round(c.head_params / 1e3)::BIGINT)
            ELSE c.head_params::VARCHAR END AS params,
       r.R1_mean AS R1,
       printf('%.1f..%.1f', r.R1_low, r.R1_high) AS R1_95,
       g.delta AS dR1,
       CASE WHEN g.delta IS NOT NULL THEN printf('%+.1f..%+.1f', g.holm_low, g.holm_high) END AS dR1_holm95,
       CASE WHEN g.significant THEN g.verdict WHEN g.delta IS NOT NULL THEN 'n.s.' END AS vs_global,
       o.delta AS dR1_gpo,
       CASE WHEN o.delta IS NOT NULL THEN printf('%+.1f..%+.1f', o.holm_low, o.holm_high) END AS dR1_gpo_holm95,
       CASE WHEN o.significant THEN o.verdict WHEN o.delta IS NOT NULL THEN 'n.s.' END AS vs_gpo,
       g.p_holm AS p_global, o.p_holm AS p_gpo,
       round(g.mde, 1) AS mde,
       r.seeds, r.mAP_mean AS mAP, c.trainable,
       CASE WHEN c.epochs_min = c.epochs_max THEN c.epochs_min::VARCHAR
            ELSE printf('%d..%d', c.epochs_min, c.epochs_max) END AS epochs,
       CASE WHEN c.budget THEN replace(c.stop, 'budget', 'budget!') ELSE c.stop END AS stop,
       round(c.grounding, 1) AS grounding,
       c.seconds
FROM reference_stats r LEFT JOIN cost c USING (variant)
LEFT JOIN reference_tests g ON g.variant = r.variant AND g.reference = 'global'
LEFT JOIN reference_tests o ON o.variant = r.variant AND o.reference = 'gpo'
ORDER BY r.R1_mean DESC, r.variant;
