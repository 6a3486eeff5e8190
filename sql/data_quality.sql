-- What in the data is suspect (flagged by the data-quality report, kept, never dropped)?
-- Per flag and split: how many rows, how many persons, and an example: identities with images in
-- several splits (test people seen in training), one caption text on images of several persons (it
-- cannot single anyone out), captions that are not language (control characters, code, non-letters).
-- Every flagged row: SELECT * FROM data_quality WHERE flag = '...'.
SELECT flag,
       split,
       count(*) AS rows,
       count(DISTINCT person_id) AS persons,
       arg_min(coalesce(text, ''), coalesce(caption_id, person_id)) AS example_text,
       arg_min(detail, coalesce(caption_id, person_id)) AS example_detail
FROM data_quality
GROUP BY flag, split
ORDER BY flag, split;
