-- Which captions are hardest: where does their first true match (same person) rank?
-- Per exhaustive scoring job, the 20 queries whose first correct image ranks worst; a NULL
-- first_match_rank means no correct image in the stored top 100 (the hardest of all).
WITH jobs AS (
  SELECT run_id, variant, out_dir FROM scoring_jobs WHERE mode = 'exhaustive'
), ranked AS (
  SELECT j.run_id, j.variant, r.query_id, r.rank, i.person_id = c.person_id AS hit
  FROM rankings r
  JOIN jobs j ON j.out_dir = r.out_dir
  JOIN captions c ON c.caption_id = r.query_id
  JOIN images i ON i.image_id = r.image_id
), per_query AS (
  SELECT run_id, variant, query_id, min(rank) FILTER (WHERE hit) AS first_match_rank
  FROM ranked GROUP BY ALL
)
SELECT q.variant, q.query_id, q.first_match_rank, c.person_id, c.text, q.run_id AS scoring_run_id
FROM per_query q JOIN captions c ON c.caption_id = q.query_id
QUALIFY row_number() OVER (
  PARTITION BY q.run_id ORDER BY q.first_match_rank DESC NULLS FIRST, q.query_id
) <= 20
ORDER BY q.variant, q.first_match_rank DESC NULLS FIRST, q.query_id;
