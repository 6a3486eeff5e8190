-- Which attribute words (colours, garments) come with misses?
-- Over the exhaustive scoring jobs: for each vocabulary word found in a query caption, how many
-- queries carry it and how often the top-1 image is the wrong person (miss rate, percent).
WITH jobs AS (
  SELECT run_id, variant, out_dir FROM scoring_jobs WHERE mode = 'exhaustive'
), top1 AS (
  SELECT j.variant, r.query_id, i.person_id <> c.person_id AS miss
  FROM rankings r
  JOIN jobs j ON j.out_dir = r.out_dir
  JOIN captions c ON c.caption_id = r.query_id
  JOIN images i ON i.image_id = r.image_id
  WHERE r.rank = 1
), words AS (
  SELECT DISTINCT caption_id, unnest(regexp_split_to_array(lower(text), '[^a-z-]+')) AS word
  FROM captions
)
SELECT t.variant, v.kind, v.word,
       count(*) AS queries,
       sum(t.miss::INTEGER) AS misses,
       round(100.0 * avg(t.miss::INTEGER), 2) AS miss_rate
FROM top1 t
JOIN words w ON w.caption_id = t.query_id
JOIN vocabulary v ON v.word = w.word
GROUP BY ALL
ORDER BY t.variant, miss_rate DESC, queries DESC, v.word;
