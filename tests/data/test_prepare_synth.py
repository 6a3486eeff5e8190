"""Round trip: `tasks.data.synth.generate` -> `prepare_dataset` -> counts that match the synth annotation."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image


def test_synth_source_prepares_cleanly(synth_source: Path, prepared_data: Path) -> None:
    records = json.loads((synth_source / "reid_raw.json").read_text(encoding="utf-8"))
    persons: dict[str, set[int]] = defaultdict(set)
    images: dict[str, int] = defaultdict(int)
    captions: dict[str, int] = defaultdict(int)
    for record in records:
        persons[record["split"]].add(record["id"])
        images[record["split"]] += 1
        captions[record["split"]] += sum(1 for text in record["captions"] if text.strip())
    manifest = json.loads((prepared_data / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dataset"] == "synthetic"
    assert manifest["quarantine"] == {}
    assert manifest["records"] == len(records)
    for split, counts in manifest["splits"].items():
        assert counts == {
            "identities": len(persons[split]),
            "images": images[split],
            "captions": captions[split],
        }
    assert sum(len(ids) for ids in persons.values()) == len(set().union(*persons.values())) == 16

    rows = pq.read_table(prepared_data / "images.parquet").to_pylist()
    assert [row["file_path"] for row in rows] == [record["file_path"] for record in records]
    for row in rows[:8]:
        assert row["image"] == (synth_source / "imgs" / row["file_path"]).read_bytes()
        with Image.open(io.BytesIO(row["image"])) as image:
            assert (image.height, image.width) == (row["height"], row["width"])
