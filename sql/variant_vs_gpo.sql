-- Does content attention beat a learned pooling of the same capacity (`gpo`, VSE∞'s generalized
-- pooling: weights over the rank order of each dimension's values, never over content)? As
-- variant_vs_global.sql, for the family of attention variants (every variant but `global`, `gpo` and the
-- controls) against `gpo`: paired R1 difference, its unadjusted 95% interval and p, Holm's p_holm and
-- adjusted interval; `verdict` better or worse when significant after Holm, else the adjusted interval;
-- `mde` the design's power figure, not a bound on the difference.
SELECT variant, seeds, queries, persons, R1_mean, delta_R1, se, delta_R1_low, delta_R1_high, p, p_holm,
       holm_low, holm_high, family_size, mde, verdict
FROM latest_tests WHERE reference = 'gpo'
ORDER BY delta_R1 DESC, variant;
