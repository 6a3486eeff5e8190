"""`prepare_dataset`: contract columns, every validation rule, the three layouts, idempotence, Unicode."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.data.prepare import Reason, prepare_dataset
from tasks.data.prepare.validate import missing_key

IMAGES_TYPES = {
    "image_id": pa.int64(),
    "person_id": pa.int64(),
    "split": pa.string(),
    "file_path": pa.string(),
    "image": pa.binary(),
    "height": pa.int32(),
    "width": pa.int32(),
}
CAPTIONS_TYPES = {
    "caption_id": pa.int64(),
    "image_id": pa.int64(),
    "person_id": pa.int64(),
    "split": pa.string(),
    "text": pa.string(),
}
QUARANTINE_TYPES = {"record_index": pa.int64(), "source": pa.string(), "reason": pa.string()}


def record(pid: int, path: str, split: str = "train", captions: Any = None) -> dict[str, Any]:
    caps = captions if captions is not None else [f"a person {pid} in {path}", f"second caption {pid}"]
    return {"id": pid, "file_path": path, "captions": caps, "split": split}


def read(out: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def quarantined(out: Path) -> dict[int, str]:
    return {row["record_index"]: row["reason"] for row in read(out, "quarantine")}


@pytest.fixture
def good_pair(make_png: Any) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Two valid records (train and test) and their images."""
    records = [record(1, "cam_a/001.png"), record(2, "cam_b/002.png", split="test")]
    return records, {"cam_a/001.png": make_png(1), "cam_b/002.png": make_png(2)}


def test_valid_source_matches_contract(tmp_path: Path, write_source: Any, good_pair: Any) -> None:
    records, images = good_pair
    source = write_source(tmp_path / "src", records, images)
    summary = prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    out = tmp_path / "data"
    for name, types in (
        ("images", IMAGES_TYPES),
        ("captions", CAPTIONS_TYPES),
        ("quarantine", QUARANTINE_TYPES),
    ):
        schema = pq.read_schema(out / f"{name}.parquet")
        assert {f.name: f.type for f in schema} == types
    rows = read(out, "images")
    assert [r["file_path"] for r in rows] == [r["file_path"] for r in records]
    assert [r["image_id"] for r in rows] == [0, 1]
    assert [(r["person_id"], r["split"]) for r in rows] == [(1, "train"), (2, "test")]
    for row in rows:
        assert row["image"] == images[row["file_path"]]
        with Image.open(io.BytesIO(row["image"])) as decoded:
            assert (row["height"], row["width"]) == (decoded.height, decoded.width) == (80, 32)
    captions = read(out, "captions")
    expected = [(i, rec["id"], text) for i, rec in enumerate(records) for text in rec["captions"]]
    assert [(c["image_id"], c["person_id"], c["text"]) for c in captions] == expected
    assert [c["caption_id"] for c in captions] == list(range(len(expected)))
    assert read(out, "quarantine") == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"] == {"identities": 1, "images": 1, "captions": 2}
    assert manifest["splits"]["val"] == {"identities": 0, "images": 0, "captions": 0}
    assert manifest["dataset"] == "cuhk-pedes" and manifest["source"]["format"] == "cuhk-pedes"
    assert summary.images == 2 and summary.quarantined == 0 and not summary.up_to_date
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def _outside_png(tmp_path: Path, make_png: Any) -> Path:
    path = tmp_path / "outside.png"
    path.write_bytes(make_png(99))
    return path


# Each case: (the bad record's path, its image bytes or None for no file, record overrides, reason).
RULES: dict[str, tuple[str, bytes | None, dict[str, Any], str]] = {
    "missing file": ("x/missing.png", None, {}, Reason.MISSING_FILE),
    "zero-byte file": ("x/empty.png", b"", {}, Reason.ZERO_BYTE),
    "not an image": ("x/notes.png", b"these are not pixels\n" * 4, {}, Reason.NOT_AN_IMAGE),
    "id not int": ("x/ok.png", b"PNG", {"id": "7"}, Reason.BAD_ID),
    "id bool": ("x/ok.png", b"PNG", {"id": True}, Reason.BAD_ID),
    "id float": ("x/ok.png", b"PNG", {"id": 7.0}, Reason.BAD_ID),
    "captions a string": ("x/ok.png", b"PNG", {"captions": "a man"}, Reason.BAD_CAPTIONS),
    "captions with a number": ("x/ok.png", b"PNG", {"captions": ["a man", 3]}, Reason.BAD_CAPTIONS),
    "path not a string": ("x/ok.png", b"PNG", {"file_path": 12}, Reason.BAD_PATH_TYPE),
    "bad split": ("x/ok.png", b"PNG", {"split": "dev"}, Reason.BAD_SPLIT),
    "no captions": ("x/ok.png", b"PNG", {"captions": []}, Reason.NO_CAPTION),
    "blank captions only": ("x/ok.png", b"PNG", {"captions": ["", " \t\n"]}, Reason.NO_CAPTION),
    "missing id": ("x/ok.png", b"PNG", {"id": None}, missing_key("id")),
    "missing captions": ("x/ok.png", b"PNG", {"captions": None}, missing_key("captions")),
    "missing path": ("x/ok.png", b"PNG", {"file_path": None}, missing_key("file_path")),
    "dot-dot path": ("../outside.png", None, {}, Reason.PATH_ESCAPES),
    "dot-dot inside path": ("x/../../outside.png", None, {}, Reason.PATH_ESCAPES),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_rule_quarantines_only_the_bad_record(
    case: str, tmp_path: Path, write_source: Any, make_png: Any, good_pair: Any
) -> None:
    path, data, overrides, reason = RULES[case]
    records, images = good_pair
    _outside_png(tmp_path, make_png)  # a valid image just outside imgs/: must never be taken
    bad = record(3, path)
    for key, value in overrides.items():
        bad.pop(key) if value is None else bad.__setitem__(key, value)
    if data == b"PNG":
        data = make_png(3)
    source = write_source(tmp_path / "src", [records[0], bad, records[1]], images)
    if data is not None:
        (source / "imgs" / path).parent.mkdir(parents=True, exist_ok=True)
        (source / "imgs" / path).write_bytes(data)
    summary = prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    assert quarantined(tmp_path / "data") == {1: str(reason)}
    assert [r["file_path"] for r in read(tmp_path / "data", "images")] == [r["file_path"] for r in records]
    assert summary.quarantine == {str(reason): 1}
    source_json = read(tmp_path / "data", "quarantine")[0]["source"]
    assert json.loads(source_json) == bad


def test_truncated_image(tmp_path: Path, write_source: Any, make_png: Any, good_pair: Any) -> None:
    records, images = good_pair
    whole = make_png(5)
    for cut, name in ((len(whole) // 2, "half.png"), (len(whole) - 6, "no_end.png")):
        images[name] = whole[:cut]
    bad = [record(5, "half.png"), record(6, "no_end.png")]
    source = write_source(tmp_path / "src", [*bad, *records], images)
    prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    assert quarantined(tmp_path / "data") == {0: Reason.TRUNCATED, 1: Reason.TRUNCATED}
    assert len(read(tmp_path / "data", "images")) == 2


def test_absolute_path_and_symlink_out_are_never_taken(
    tmp_path: Path, write_source: Any, make_png: Any, good_pair: Any
) -> None:
    records, images = good_pair
    outside = _outside_png(tmp_path, make_png)
    source = write_source(tmp_path / "src", [], images)
    (source / "imgs" / "link.png").symlink_to(outside)
    (source / "imgs" / "inner_link.png").symlink_to(source / "imgs" / "cam_a" / "001.png")
    bad = [record(7, str(outside)), record(8, "link.png"), record(9, "inner_link.png")]
    write_source(source, [*records, *bad], {})
    prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    # a symlink that stays inside imgs/ resolves to an image already taken: a duplicate, not an escape
    assert quarantined(tmp_path / "data") == {
        2: Reason.PATH_ESCAPES,
        3: Reason.PATH_ESCAPES,
        4: Reason.DUPLICATE_PATH,
    }


def test_duplicate_path_quarantines_the_later_record(
    tmp_path: Path, write_source: Any, good_pair: Any
) -> None:
    records, images = good_pair
    later = record(5, "cam_a/001.png", captions=["the later record"])
    source = write_source(tmp_path / "src", [records[0], records[1], later], images)
    prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    assert quarantined(tmp_path / "data") == {2: Reason.DUPLICATE_PATH}
    assert [r["person_id"] for r in read(tmp_path / "data", "images")] == [1, 2]


def test_blank_caption_dropped_image_kept(tmp_path: Path, write_source: Any, good_pair: Any) -> None:
    records, images = good_pair
    records[0]["captions"] = ["", "  a woman in a red coat  ", "\n"]
    source = write_source(tmp_path / "src", records, images)
    prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    texts = [c["text"] for c in read(tmp_path / "data", "captions") if c["image_id"] == 0]
    assert texts == ["  a woman in a red coat  "]
    assert read(tmp_path / "data", "quarantine") == []


def test_unicode_captions_and_paths_kept_exactly(tmp_path: Path, write_source: Any, make_png: Any) -> None:
    captions = ["Ünïcödé café, naïve — 穿红色外套的女人 👩\u200d🦰", "tab\there\u00a0nbsp", "ﬁ ligature, Ω≠Ω"]
    records = [record(1, "ünï/图像.png", captions=captions)]
    source = write_source(tmp_path / "src", records, {"ünï/图像.png": make_png(1)})
    prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    assert [c["text"] for c in read(tmp_path / "data", "captions")] == captions
    assert read(tmp_path / "data", "images")[0]["file_path"] == "ünï/图像.png"


def test_cuhk_caption_all_uses_the_standard_split_by_id(
    tmp_path: Path, write_source: Any, make_png: Any
) -> None:
    ids = {"train": 11003, "val": 11004, "test": 13003, "none": 13004}
    records = [{"id": pid, "file_path": f"{name}.png", "captions": [name]} for name, pid in ids.items()]
    images = {f"{name}.png": make_png(i) for i, name in enumerate(ids)}
    source = write_source(tmp_path / "src", records, images, annotation="caption_all.json")
    summary = prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False)
    assert [(r["person_id"], r["split"]) for r in read(tmp_path / "data", "images")] == [
        (11003, "train"),
        (11004, "val"),
        (13003, "test"),
    ]
    assert quarantined(tmp_path / "data") == {3: Reason.ID_OUTSIDE_SPLITS}
    assert summary.splits["val"].images == 1


@pytest.mark.parametrize("annotation", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_holds_out_training_identities_as_val(
    annotation: str, tmp_path: Path, write_source: Any, make_png: Any
) -> None:
    # ICFG-PEDES has train and test only; 5% of the training identities become val, by person id
    records = [record(pid, f"p{pid}/{shot}.png") for pid in range(1, 201) for shot in range(2)]
    records += [record(900, "t/900.png", split="test"), record(901, "t/901.png", split="val")]
    images = {r["file_path"]: make_png(i) for i, r in enumerate(records)}
    source = write_source(tmp_path / "src", records, images, annotation=annotation)
    summary = prepare_dataset(source, "icfg-pedes", tmp_path / "data", progress=False)
    assert quarantined(tmp_path / "data") == {len(records) - 1: Reason.BAD_SPLIT}  # the source has no val
    rows = read(tmp_path / "data", "images")
    split_of: dict[int, set[str]] = {}
    for row in rows:
        split_of.setdefault(row["person_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())  # a person's images stay together
    val = {pid for pid, splits in split_of.items() if splits == {"val"}}
    assert 4 <= len(val) <= 18 and summary.splits["val"].identities == len(val)  # ~5% of 200
    assert split_of[900] == {"test"}
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["val_split"]["percent"] == 5 and manifest["val_split"]["from"] == "train"
    again = prepare_dataset(source, "icfg-pedes", tmp_path / "again", progress=False)
    assert {r["person_id"] for r in read(tmp_path / "again", "images") if r["split"] == "val"} == val
    assert again.splits["val"].images == summary.splits["val"].images


def test_rstpreid_layout_reads_img_path(tmp_path: Path, write_source: Any, good_pair: Any) -> None:
    records, images = good_pair
    renamed = [
        {"id": r["id"], "img_path": r["file_path"], "captions": r["captions"], "split": r["split"]}
        for r in records
    ]
    renamed.append(records[0] | {"split": "val"})  # file_path is the CUHK/ICFG name, not RSTPReid's
    source = write_source(tmp_path / "src", renamed, images, annotation="data_captions.json")
    summary = prepare_dataset(source, "rstpreid", tmp_path / "data", progress=False)
    assert [r["file_path"] for r in read(tmp_path / "data", "images")] == [r["img_path"] for r in renamed[:2]]
    assert quarantined(tmp_path / "data") == {2: missing_key("img_path")}
    assert list(summary.splits) == ["train", "val", "test"]


def test_synth_marker_names_the_dataset(tmp_path: Path, write_source: Any, good_pair: Any) -> None:
    records, images = good_pair
    source = write_source(tmp_path / "src", records, images)
    (source / "synth.json").write_text("{}")
    assert prepare_dataset(source, "cuhk-pedes", tmp_path / "data", progress=False).dataset == "synthetic"


def test_rerun_is_a_no_op_and_a_forced_rerun_is_byte_identical(
    tmp_path: Path, write_source: Any, make_png: Any, good_pair: Any
) -> None:
    records, images = good_pair
    records.append(record(3, "missing.png"))
    source = write_source(tmp_path / "src", records, images)
    out = tmp_path / "data"
    first = prepare_dataset(source, "cuhk-pedes", out, progress=False)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    second = prepare_dataset(source, "cuhk-pedes", out, progress=False)
    assert second.up_to_date and not first.up_to_date
    assert second.content_hash == first.content_hash and second.splits == first.splits
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    (out / "manifest.json").unlink()
    third = prepare_dataset(source, "cuhk-pedes", out, progress=False)
    assert not third.up_to_date
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        name: data for name, (data, _) in before.items()
    }
    (source / "imgs" / "cam_b" / "002.png").write_bytes(make_png(42))  # changed image bytes
    fourth = prepare_dataset(source, "cuhk-pedes", out, progress=False)
    assert not fourth.up_to_date and fourth.content_hash != first.content_hash
    assert read(out, "images")[1]["image"] == make_png(42)


def test_failed_write_leaves_no_files(tmp_path: Path) -> None:
    from tasks.data.prepare.writer import AtomicOutputs

    (tmp_path / "images.parquet").write_bytes(b"previous")
    with pytest.raises(RuntimeError), AtomicOutputs(tmp_path) as outputs:
        outputs.stage("images.parquet").write_bytes(b"half")
        outputs.stage("captions.parquet").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["images.parquet"]
    assert (tmp_path / "images.parquet").read_bytes() == b"previous"
