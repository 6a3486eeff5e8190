"""The DATA folder, written by `tasks.data.prepare` and read by every later stage (README,
"Preparing datasets"): its file names and Arrow schemas, defined once here.

```
DATA/images.parquet      image_id, person_id, split, file_path, image (encoded bytes), height, width
DATA/captions.parquet    caption_id, image_id, person_id, split, text
DATA/quarantine.parquet  record_index, source (the raw record as JSON), reason
DATA/manifest.json       format, source, dataset, counts per split, quarantine by reason, content hash
```
"""

from __future__ import annotations

import pyarrow as pa

IMAGES = "images.parquet"
CAPTIONS = "captions.parquet"
QUARANTINE = "quarantine.parquet"
MANIFEST = "manifest.json"
OUTPUTS = (IMAGES, CAPTIONS, QUARANTINE)  # what a complete DATA folder holds beside the manifest
SPLITS = ("train", "val", "test")

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("person_id", pa.int64()),
        ("split", pa.string()),
        ("file_path", pa.string()),
        ("image", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)
CAPTIONS_SCHEMA = pa.schema(
    [
        ("caption_id", pa.int64()),
        ("image_id", pa.int64()),
        ("person_id", pa.int64()),
        ("split", pa.string()),
        ("text", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [("record_index", pa.int64()), ("source", pa.string()), ("reason", pa.string())]
)
