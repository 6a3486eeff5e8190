"""`tbpr synth`: determinism, splits, caption-attribute binding, image shape, CLI errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.data.synth import generate
from tasks.data.synth.attributes import PALETTE, identity_at, identity_rng
from tasks.data.synth.captions import COLOUR_WORDS, NOUNS, captions_for
from tasks.data.synth.views import sample_views

N = 12

# Garment noun (last word of each synonym) -> attribute slot, built from the grammar's own vocabulary.
NOUN_SLOT = {
    phrase.split()[-1]: slot for slot, kinds in NOUNS.items() for names in kinds.values() for phrase in names
}
SLOT_COLOUR = {"upper": "upper_colour", "lower": "lower_colour", "shoes": "shoes_colour", "bag": "bag_colour",
               "headwear": "headwear_colour", "hair": "hair_colour"}  # fmt: skip
BOUNDARY = {",", ".", "and", "with", "of", "a", "an", "the", "his", "her", "in", "is", "are"}


def bound_colours(caption: str) -> list[tuple[str, str]]:
    """(slot, colour) for every garment noun with a colour right before it or `is/are COLOUR` after it."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)*|[.,]", caption.lower())
    found = []
    for i, word in enumerate(words):
        slot = NOUN_SLOT.get(word)
        if slot is None:
            continue
        for j in range(i - 1, max(-1, i - 5), -1):
            if words[j] in BOUNDARY:
                break
            if words[j] in COLOUR_WORDS:
                found.append((slot, COLOUR_WORDS[words[j]]))
                break
        if i + 2 < len(words) and words[i + 1] in {"is", "are"} and words[i + 2] in COLOUR_WORDS:
            found.append((slot, COLOUR_WORDS[words[i + 2]]))
    return found


def read(out: Path, name: str) -> Any:
    return json.loads((out / name).read_text(encoding="utf-8"))


def all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = generate(
        out, identities=N, seed=0, preview=out.parent / "preview.png", workers=1, show_progress=False
    )
    assert summary.identities == N
    return out


def test_same_seed_gives_identical_bytes_in_parallel_and_different_seed_differs(
    dataset: Path, tmp_path: Path
) -> None:
    generate(tmp_path / "again", identities=N, seed=0, workers=2, show_progress=False)
    assert all_bytes(tmp_path / "again") == all_bytes(dataset)
    generate(tmp_path / "other", identities=N, seed=1, workers=1, show_progress=False)
    other, base = all_bytes(tmp_path / "other"), all_bytes(dataset)
    assert other["reid_raw.json"] != base["reid_raw.json"]
    shared = set(other) & set(base)
    assert all(other[k] != base[k] for k in shared if k.endswith(".png"))


def test_rerun_over_previous_output_replaces_it(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate(out, identities=N + 6, seed=0, workers=1, show_progress=False)
    generate(out, identities=N, seed=0, workers=1, show_progress=False)
    assert all_bytes(out) == all_bytes(dataset)


def test_layout_and_marker(dataset: Path) -> None:
    records = read(dataset, "reid_raw.json")
    assert set(records[0]) == {"id", "file_path", "split", "captions", "processed_tokens"}
    assert read(dataset, "synth.json")["identities"] == N
    assert {r["file_path"] for r in records} == {a["file_path"] for a in read(dataset, "attributes.json")}
    for r in records:
        assert (dataset / "imgs" / r["file_path"]).is_file()


def test_splits_are_disjoint_by_identity(dataset: Path) -> None:
    records = read(dataset, "reid_raw.json")
    ids: dict[str, set[int]] = defaultdict(set)
    for r in records:
        ids[r["split"]].add(r["id"])
    assert set(ids) == {"train", "val", "test"}
    assert (
        not (ids["train"] & ids["val"])
        and not (ids["train"] & ids["test"])
        and not (ids["val"] & ids["test"])
    )
    assert ids["train"] | ids["val"] | ids["test"] == set(range(1, N + 1))
    assert len(ids["val"]) >= 2 and len(ids["test"]) >= 2 and len(ids["train"]) > len(ids["test"])


def test_two_to_five_images_per_identity_and_two_distinct_captions(dataset: Path) -> None:
    records = read(dataset, "reid_raw.json")
    per_id = Counter(r["id"] for r in records)
    assert all(2 <= n <= 5 for n in per_id.values())
    for r in records:
        assert len(r["captions"]) == 2 and r["captions"][0] != r["captions"][1]
        for text, toks in zip(r["captions"], r["processed_tokens"], strict=True):
            assert toks == re.sub(r"[^a-z0-9'\- ]", " ", text.lower()).split()


def test_caption_colours_match_the_right_garment(dataset: Path) -> None:
    attributes = {a["file_path"]: a for a in read(dataset, "attributes.json")}
    checked = 0
    for r in read(dataset, "reid_raw.json"):
        truth = attributes[r["file_path"]]
        for text in r["captions"]:
            for slot, colour in bound_colours(text):
                assert truth[SLOT_COLOUR[slot]] == colour, (text, slot, colour)
                checked += 1
    assert checked > 100


def test_the_colour_check_catches_a_swap() -> None:
    assert bound_colours("A man in a red jacket and blue jeans. His shoes are white.") == [
        ("upper", "red"), ("lower", "blue"), ("shoes", "white")]  # fmt: skip
    assert ("upper", "blue") in bound_colours("A man in a blue striped coat and red jeans.")


def test_captions_mention_only_what_the_view_shows() -> None:
    backpack_words = {p.split()[-1] for p in NOUNS["bag"]["backpack"]}
    handbag_phrases = NOUNS["bag"]["handbag"]
    seen: Counter[str] = Counter()
    for index in range(300):
        identity = identity_at(7, index)
        for k, view in enumerate(sample_views(identity, identity_rng(7, index, "views"))):
            text = " ".join(captions_for(identity, view, identity_rng(7, index, f"captions-{k}"))).lower()
            if identity.bag_type == "backpack" and view.viewpoint == "front":
                assert not backpack_words & set(re.findall(r"[a-z]+", text))
            if identity.bag_type == "handbag" and view.viewpoint == "back":
                assert not any(p in text for p in handbag_phrases)
            if identity.bag_type in {"backpack", "handbag"}:
                seen[identity.bag_type] += any(p in text for p in NOUNS["bag"][identity.bag_type])
    assert seen["backpack"] > 10 and seen["handbag"] > 10


def test_identities_share_a_small_palette_and_come_in_swapped_pairs() -> None:
    people = [identity_at(3, i) for i in range(400)]
    assert {p.upper_colour for p in people} <= set(PALETTE) and len(PALETTE) <= 12
    swaps = sum(
        1
        for a, b in zip(people[0::2], people[1::2], strict=True)
        if a.upper_colour != a.lower_colour
        and (a.upper_colour, a.lower_colour) == (b.lower_colour, b.upper_colour)
    )
    assert swaps >= 10


def test_images_decode_and_are_tall(dataset: Path) -> None:
    for r in read(dataset, "reid_raw.json"):
        with Image.open(dataset / "imgs" / r["file_path"]) as image:
            image.load()
            assert image.mode == "RGB"
            assert 90 <= image.width <= 160 and 250 <= image.height <= 420
            assert 2.3 <= image.height / image.width <= 3.1


def test_preview_is_a_contact_sheet(dataset: Path) -> None:
    with Image.open(dataset.parent / "preview.png") as sheet:
        assert sheet.width > sheet.height > 400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--identities", "2"], "at least"),
        (["--identities", "12"], "holds no synth.json"),
        (["--identities", "20", "--held-out", "4", "--test", "15"], "--test must be between 2 and 14"),
    ],
)
def test_cli_exits_2_on_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    if "12" in args:
        out.mkdir()
        (out / "something.txt").write_text("not a synth output")
    result = subprocess.run(
        [sys.executable, "-m", "tbpr.cli", "synth", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert message in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(("identities", "held_out", "test"), [(40, 4, None), (40, 4, 20), (700, 100, 300)])
def test_test_count_is_its_own(identities: int, held_out: int, test: int | None) -> None:
    """`test` identities go to test, `held_out` to val, the rest to train; val and test alike by default."""
    from tasks.data.synth.layout import split_of_identities

    counts = Counter(split_of_identities(identities, 0, held_out, test))
    expected_test = held_out if test is None else test
    assert counts == {"test": expected_test, "val": held_out, "train": identities - held_out - expected_test}
