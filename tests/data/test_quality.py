"""The data-quality report: flags computed by hand on small tables, and through `tbpr prepare` on an
RSTPReid layout with its known defect (one caption on 9 images of 5 persons), kept, never dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.prepare import prepare_dataset
from tasks.data.quality import (
    IDENTITY_IN_SPLITS,
    NOT_LANGUAGE,
    REUSED_CAPTION,
    flags_table,
    language_problem,
    quality_flags,
)

SHARED = "A pedestrian wearing dark clothes and walking on the road."


@pytest.mark.parametrize(
    "text",
    [
        "A woman from behind, wearing a red coat; she carries a bag (black) and a phone.",
        "The man is about 1.75m tall, wears a T-shirt, jeans and size-42 shoes.",
        "一个穿红色外套、黑色裤子的女人",  # letters of another script are letters
        "A man in a grey hoodie.\n He holds an umbrella.",  # a line break is whitespace, not a control
    ],
)
def test_descriptions_are_language(text: str) -> None:
    assert language_problem(text) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a man in a red\x00 coat", "U+0000"),
        ("a woman\u200b in blue", "U+200B"),
        ("<img src=x onerror=alert(1)>", "markup"),
        ("def caption(x): return x", "code"),
        ('{"caption": "a man"}', "code"),
        ("SELECT text FROM captions", "code"),
        ("see https://example.org/p/1", "code"),
        ("### 12345 ?? !! 000", "non-letters"),
        ("", "non-letters"),
    ],
)
def test_what_is_not_language_says_why(text: str, words: str) -> None:
    problem = language_problem(text)
    assert problem is not None and words in problem


def test_flags_against_a_count_by_hand() -> None:
    images = pa.table({"image_id": [0, 1, 2, 3, 4], "person_id": [7, 7, 8, 9, 9], "split": ["train", "test", "test", "test", "test"]})  # fmt: skip
    captions = pa.table(
        {
            "caption_id": [0, 1, 2, 3, 4, 5],
            "image_id": [0, 1, 2, 3, 4, 4],
            "person_id": [7, 7, 8, 9, 9, 9],
            "split": ["train", "test", "test", "test", "test", "test"],
            # 1 and 2: one text (case, spacing and end punctuation aside) on two persons; 3 and 4: one text
            # on one person's two images (not a reuse across persons); 5: control characters
            "text": [
                "a man in red",
                "A woman in  blue.",
                "a woman in blue",
                "a cyclist",
                "a cyclist",
                "a\x07b",
            ],
        }
    )
    flags = quality_flags(images, captions)
    got = {(f.flag, f.person_id, f.caption_id) for f in flags}
    assert got == {
        (IDENTITY_IN_SPLITS, 7, None),
        (REUSED_CAPTION, 7, 1),
        (REUSED_CAPTION, 8, 2),
        (NOT_LANGUAGE, 9, 5),
    }
    reused = [f for f in flags if f.flag == REUSED_CAPTION]
    assert {f.detail for f in reused} == {"the same text on 2 images of 2 persons"}
    table = flags_table(flags)
    assert table.num_rows == 4 and table.column("caption_id").null_count == 1


def test_prepare_reports_rstpreids_reused_caption_and_keeps_every_row(
    tmp_path: Path, write_source: Any, make_png: Any
) -> None:
    # RSTPReid's layout: one caption (SHARED) on 9 images of 5 persons, plus a caption that is markup
    records: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    for i in range(12):
        person = i // 2 if i < 10 else 10 + i
        captions = [SHARED if i < 9 else f"a person number {i} in a coat", f"someone with bag {i}"]
        if i == 11:
            captions[1] = "<b>caption</b>"
        records.append({"id": person, "img_path": f"{i}.jpg", "captions": captions, "split": "train"})
        images[f"{i}.jpg"] = make_png(i)
    source = write_source(tmp_path / "src", records, images, annotation="data_captions.json")
    summary = prepare_dataset(source, "rstpreid", tmp_path / "data", progress=False)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["quality"] == summary.quality
    reused = manifest["quality"][REUSED_CAPTION]
    assert (
        reused["count"] == 9 and reused["examples"][0]["detail"] == "the same text on 9 images of 5 persons"
    )
    assert manifest["quality"][NOT_LANGUAGE]["count"] == 1
    assert manifest["quality"][NOT_LANGUAGE]["examples"][0]["text"] == "<b>caption</b>"
    # flagged, not dropped: every caption of every record is in captions.parquet
    assert pq.read_table(tmp_path / "data" / "captions.parquet").num_rows == 2 * len(records)
