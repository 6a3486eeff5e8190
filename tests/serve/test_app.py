"""The web service through FastAPI's TestClient: search answers equal `search_text`'s, bad requests
are 400 with a message, only the EMB's own images are served, heat maps for heads that attend."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tasks.embed.layout import EmbedInfo
from tasks.score.search import search_text
from tasks.serve.app import create_app
from tasks.serve.gallery import HEAT_HEIGHT, MAX_K, Gallery
from tests.embed.folder_images import GOOD


@pytest.fixture(scope="module")
def client(served_emb: Path) -> TestClient:
    return TestClient(create_app(Gallery(served_emb)))


def test_search_answers_rank_path_score_as_the_cli_search(client: TestClient, served_emb: Path) -> None:
    response = client.get("/api/search", params={"q": "a person in a red coat", "k": 4})
    assert response.status_code == 200
    expected = search_text(served_emb, "a person in a red coat", top_k=4)
    assert response.json() == [
        {
            "rank": h.rank,
            "path": h.file_path,
            "score": pytest.approx(h.score, abs=1e-5),
            "confidence": None,
            "match": None,
        }
        for h in expected
    ]
    assert response.headers["X-Tbpr-Verdict"] == "uncalibrated"  # no open_set.json beside the model
    second = client.get("/api/search", params={"q": "a person in a red coat", "k": 2, "offset": 2}).json()
    assert [hit["path"] for hit in second] == [h.file_path for h in expected[2:4]]  # "load more"
    assert [hit["rank"] for hit in second] == [3, 4]
    everything = client.get("/api/search", params={"q": "someone", "k": MAX_K}).json()
    assert sorted(hit["path"] for hit in everything) == sorted(GOOD)  # k beyond the gallery: all of it


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "", "k": 3}, "the query text is empty"),
        ({"q": "   \n", "k": 3}, "the query text is empty"),
        ({"q": "red " * 10_000, "k": 3}, "too long (10,000 words"),
        ({"q": "x" * 10_001}, "too long (1 words, 10,001 characters)"),
        ({"q": "red", "k": 0}, "k must be between 1 and 100 (got 0)"),
        ({"q": "red", "k": MAX_K + 1}, "k must be between 1 and 100 (got 101)"),
        ({"q": "red", "k": "ten"}, "bad request parameters (k: "),
        ({"q": "red", "offset": -1}, "offset must be between 0 and 900 (got -1)"),
        ({"q": "red", "offset": 901}, "offset must be between 0 and 900 (got 901)"),
        ({"k": 3}, "bad request parameters (q: Field required)"),
    ],
)
def test_bad_requests_are_400_with_a_message(
    client: TestClient, params: dict[str, object], message: str
) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_only_the_embs_images_are_served(client: TestClient, served_emb: Path) -> None:
    folder = Path(EmbedInfo.read(served_emb).image_folder)
    response = client.get("/api/image", params={"path": "cam1/deep/c.webp"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert response.content == (folder / "cam1/deep/c.webp").read_bytes()
    for path in (
        "../images/f.png",
        "/etc/passwd",
        str(folder / "f.png"),
        "bad/text.jpg",
        "notes.txt",
        ".hidden/skipped.png",
    ):
        assert client.get("/api/image", params={"path": path}).status_code == 404, path


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "<script" in page.text
    assert not any(f'src="{s}' in page.text for s in ("http", "//"))  # nothing loaded from elsewhere
    assert client.get("/api/info").json() == {
        "variant": "cross_scan", "images": len(GOOD), "attention": True, "max_k": 100, "max_words": 1000, "max_chars": 10000,
        "max_offset": 900, "open_set": None,
    }  # fmt: skip


def test_heat_map_of_a_word_over_a_result(client: TestClient) -> None:
    words = client.get("/api/words", params={"q": "a man in a red coat"}).json()["words"]
    assert words == ["a", "man", "in", "a", "red", "coat"]
    response = client.get(
        "/api/heatmap", params={"q": "a man in a red coat", "path": "cam2/e.JPEG", "word": "red"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as heat:
        assert heat.size == (round(300 * HEAT_HEIGHT / 200), HEAT_HEIGHT)  # the image's aspect, 256 high
    bad = client.get(
        "/api/heatmap", params={"q": "a man in a red coat", "path": "cam2/e.JPEG", "word": "blue"}
    )
    assert bad.status_code == 400 and "'blue' is not a word of the query" in bad.json()["error"]
    missing = client.get("/api/heatmap", params={"q": "a man", "path": "../x.png", "word": "man"})
    assert missing.status_code == 404


def test_a_head_without_attention_has_no_heat_map(
    served_emb: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.embed.folder import embed_folder

    emb = embed_folder(
        Path(EmbedInfo.read(served_emb).image_folder), tiny_checkpoint("global"), tmp_path / "emb"
    ).out
    client = TestClient(create_app(Gallery(emb)))
    assert client.get("/api/info").json()["attention"] is False
    response = client.get("/api/heatmap", params={"q": "a man", "path": "f.png", "word": "man"})
    assert response.status_code == 400 and "no word-to-region attention" in response.json()["error"]
