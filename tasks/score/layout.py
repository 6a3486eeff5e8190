"""The scoring OUT folder, written by `tasks.score.run` and read by the warehouse and the plots.

```
OUT/rankings.parquet  query_id (caption_id) int64, rank int32 (1..20), image_id int64, score float32
OUT/per_query.parquet query_id, first_match_rank int64, ap float64, inp float64 (every query, in
                      EMB order: what the metrics average and the warehouse's intervals read)
OUT/metrics.json      R1 R5 R10 mAP mINP (percent), pairs_scored, seconds, mode, top_k, index,
                      scoring_run_id, and the job's details (variant, train_run_id, precision, ...)
```
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

RANKINGS = "rankings.parquet"
PER_QUERY = "per_query.parquet"
METRICS = "metrics.json"
RANKINGS_TOP = 20  # ranks kept per query: a result page and the CMC plot; the metrics rank the whole gallery
RANKINGS_SCHEMA = pa.schema(
    [("query_id", pa.int64()), ("rank", pa.int32()), ("image_id", pa.int64()), ("score", pa.float32())]
)

PER_QUERY_SCHEMA = pa.schema(
    [
        ("query_id", pa.int64()),
        ("first_match_rank", pa.int64()),
        ("ap", pa.float64()),
        ("inp", pa.float64()),
    ]
)


def rankings_glob(root: Path) -> str:
    """A recursive glob of every scoring output's rankings file under `root`."""
    return str(root / "**" / RANKINGS)
