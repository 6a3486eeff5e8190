-- Does a learned pooling or an attention head beat the mean (`global`), for this run's whole family of
-- comparisons? For the latest run's reference job (as in leaderboard.sql): every other variant's paired
-- R1 difference to `global` on the same queries (percentage points), its standard error over test
-- persons and seeds, the unadjusted 95% interval and p, and Holm's correction across the family
-- (p_holm, the adjusted interval holm_low..holm_high: significant exactly when it excludes zero).
-- `verdict` is better or worse when significant after Holm, else the adjusted interval: the true
-- difference is between its ends. `mde` is the design's power figure (the true difference detected 4
-- times in 5 at Holm's strictest level), not a bound on the difference (view latest_tests, table
-- variant_tests; mAP and mINP differences, unadjusted: table variant_stats).
SELECT variant, seeds, queries, persons, R1_mean, delta_R1, se, delta_R1_low, delta_R1_high, p, p_holm,
       holm_low, holm_high, family_size, mde, verdict
FROM latest_tests WHERE reference = 'global'
ORDER BY delta_R1 DESC, variant;
