"""Property: for random mixes of good and bad records, every record is kept or quarantined, exactly."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.data.prepare import prepare_dataset

GOOD = ("v0.png", "v1.png", "sub/v2.png")
BAD = ("trunc.png", "empty.png", "text.png")
ABSENT = ("gone.png",)
ESCAPING = ("../v0.png", "/etc/hostname", "sub/../../v1.png")
SPLITS = ("train", "val", "test")
MISSING = object()  # a key left out of the record


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, make_png: Any) -> Path:
    """The image files every example copies: three good, three bad."""
    root = tmp_path_factory.mktemp("pool")
    for seed, name in enumerate(GOOD):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(make_png(seed))
    (root / "trunc.png").write_bytes(make_png(7)[:200])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    return root


captions = st.one_of(
    st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\t\n"])), max_size=3),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), min_size=1, max_size=2),
    st.text(max_size=5),
)
fields = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(1, 30), st.just("3"), st.booleans(), st.just(MISSING)),
        "file_path": st.one_of(st.sampled_from(GOOD + BAD + ABSENT + ESCAPING), st.just(MISSING), st.just(5)),
        "captions": st.one_of(captions, st.just(MISSING)),
        "split": st.one_of(st.sampled_from([*SPLITS, "dev"]), st.just(MISSING)),
    }
)
valid = st.fixed_dictionaries(
    {
        "id": st.integers(1, 30),
        "file_path": st.sampled_from(GOOD),
        "captions": st.lists(st.sampled_from(["a man", " ", "ü 中"]), min_size=1, max_size=2),
        "split": st.sampled_from(SPLITS),
    }
)  # mostly kept; with three good paths, duplicates are common
other: st.SearchStrategy[Any] = st.one_of(
    fields.map(lambda r: {k: v for k, v in r.items() if v is not MISSING}), st.integers(), st.just([])
)
# Valid and other records drawn separately, then shuffled together: both kinds are common in every example.
records_strategy: st.SearchStrategy[list[Any]] = st.tuples(
    st.lists(valid, max_size=6), st.lists(other, max_size=6)
).flatmap(lambda pair: st.permutations(pair[0] + pair[1]))


def expected_kept(records: list[Any]) -> list[int]:
    """Which records must be kept, by the rules written out plainly (not by the library's code)."""
    claimed: set[str] = set()
    kept = []
    for index, r in enumerate(records):
        if not isinstance(r, dict) or not {"id", "file_path", "captions"} <= r.keys():
            continue
        if not isinstance(r["id"], int) or isinstance(r["id"], bool) or not isinstance(r["file_path"], str):
            continue
        caps = r["captions"]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            continue
        split_ok = r.get("split") in SPLITS or ("split" not in r and 1 <= r["id"] <= 13003)
        if not split_ok or not any(c.strip() for c in caps) or r["file_path"] in ESCAPING:
            continue
        if r["file_path"] in claimed:
            continue
        claimed.add(r["file_path"])
        if r["file_path"] in GOOD:
            kept.append(index)
    return kept


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_strategy)
def test_every_record_is_kept_or_quarantined(records: list[Any], pool: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(pool, source / "imgs")
        (source / "reid_raw.json").write_text(json.dumps(records), encoding="utf-8")
        prepare_dataset(source, "cuhk-pedes", Path(tmp) / "data", progress=False)
        images = pq.read_table(Path(tmp) / "data" / "images.parquet").to_pylist()
        caption_rows = pq.read_table(Path(tmp) / "data" / "captions.parquet").to_pylist()
        quarantine = pq.read_table(Path(tmp) / "data" / "quarantine.parquet").to_pylist()

    assert len(images) + len(quarantine) == len(records)
    q_indices = [row["record_index"] for row in quarantine]
    assert q_indices == sorted(set(q_indices))
    kept = [i for i in range(len(records)) if i not in set(q_indices)]
    assert kept == expected_kept(records)
    assert [row["file_path"] for row in images] == [records[i]["file_path"] for i in kept]
    assert [row["person_id"] for row in images] == [records[i]["id"] for i in kept]
    expected_captions = [(n, c) for n, i in enumerate(kept) for c in records[i]["captions"] if c.strip()]
    assert [(row["image_id"], row["text"]) for row in caption_rows] == expected_captions
    for row in quarantine:
        assert json.loads(row["source"]) == records[row["record_index"]] and row["reason"]
