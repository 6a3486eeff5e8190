-- Is the described person in the gallery at all? Per variant of the latest pipeline run with open-set
-- figures: each model's "no confident match" threshold is set on val so that `target` of the people who
-- are not in the gallery still get a match, then measured on test. false_alarm: each test query's person
-- removed from the gallery (all its images), the best remaining image still clears the threshold (1 -
-- the rate of correct "no match" answers); missed: the person present, nothing clears it; hit: the best
-- image clears it and is that person's; no_match_ok = 100 - false_alarm. Percent, means over seeds.
-- The trade-off curve of each variant: RUN_DIR/plots/open_set.png; each model's in open_set.curve_*.
WITH latest AS (
  SELECT parent_run_id FROM open_set ORDER BY out_dir DESC LIMIT 1
)
SELECT o.variant, count(*) AS seeds,
       round(100 * any_value(o.false_alarm_target), 1) AS target,
       round(100 * avg(o.false_alarm), 1) AS false_alarm,
       round(100 * (1 - avg(o.false_alarm)), 1) AS no_match_ok,
       round(100 * avg(o.miss_rate), 1) AS missed,
       round(100 * avg(o.hit_rate), 1) AS hit,
       round(avg(o.threshold), 3) AS threshold,
       max(o.queries) AS queries
FROM open_set o JOIN latest l ON o.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
GROUP BY o.variant
ORDER BY missed, o.variant;
