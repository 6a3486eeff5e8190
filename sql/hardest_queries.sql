-- Which captions are hardest: where does their first true match (same person) rank?
-- Per exhaustive scoring job, the 20 queries whose first correct image ranks worst in the whole
-- gallery (`per_query.first_match_rank`, which the metrics count from; `rankings` keeps the top 20).
WITH jobs AS (
  SELECT run_id, variant, out_dir FROM scoring_jobs WHERE mode = 'exhaustive'
)
SELECT j.variant, p.query_id, p.first_match_rank, c.person_id, c.text, j.run_id AS scoring_run_id
FROM per_query p
JOIN jobs j ON j.out_dir = p.out_dir
JOIN captions c ON c.caption_id = p.query_id
QUALIFY row_number() OVER (
  PARTITION BY j.run_id ORDER BY p.first_match_rank DESC, p.query_id
) <= 20
ORDER BY j.variant, p.first_match_rank DESC, p.query_id;
