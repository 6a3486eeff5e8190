-- How does validation R1 evolve, by epoch within a training run and across nightly pipeline runs?
-- One row per training run and epoch (MLflow step), with the pipeline (parent) run it belongs to.
SELECT t.variant,
       coalesce(p.start_time, t.start_time) AS pipeline_started,
       t.parent_run_id,
       t.run_id AS train_run_id,
       m.step AS epoch,
       m.value AS val_R1,
       max(m.value) OVER (PARTITION BY t.run_id) AS best_val_R1
FROM runs t
JOIN metrics m ON m.run_id = t.run_id AND m.key = 'val/R1'
LEFT JOIN runs p ON p.run_id = t.parent_run_id
WHERE t.stage = 'train'
ORDER BY t.variant, pipeline_started, train_run_id, epoch;
