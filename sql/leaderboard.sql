-- Which variant retrieves best, and at what scoring cost?
-- One row per variant: its best scoring job by test R1 (ties: the cheaper job), with that job's
-- other metrics, its mode/k/index and its cost (seconds, pairs scored).
SELECT variant,
       R1, R5, R10, mAP, mINP,
       mode, top_k, "index",
       seconds, pairs_scored,
       run_id AS scoring_run_id, model_run_id
FROM scoring_jobs
WHERE R1 IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY variant ORDER BY R1 DESC, seconds ASC, run_id) = 1
ORDER BY R1 DESC, variant;
