"""Open-set answers: a threshold calibrated on a val split (each query's own person left out plays
"not present") at a stated false-alarm rate, stored beside the checkpoint for its weights only, and the
service's verdict and calibrated confidence from it."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tasks.core.errors import TbprError
from tasks.score.search import Searcher
from tasks.serve import open_set
from tasks.serve.app import create_app
from tasks.serve.gallery import Gallery
from tbpr_models.checkpoint import weights_digest
from tests.embed.folder_images import write_image_folder


@pytest.fixture
def checkpoint(tiny_checkpoint: Callable[[str], Path], tmp_path: Path) -> Path:
    """A private copy of the tiny global checkpoint (open_set.json is written beside it)."""
    return Path(shutil.copytree(tiny_checkpoint("global"), tmp_path / "ckpt"))


def _absent_scores(val_emb: Path) -> list[float]:
    """Independently: per query, the best pair score of another person's image over the whole gallery."""
    import torch

    searcher = Searcher(val_emb)
    store = searcher.store
    _, image_person = store.gallery_ids()
    _, query_person = store.query_ids()
    rows = np.arange(store.num_images)
    best = []
    with torch.inference_mode():
        images = store.images(rows, searcher.device, torch.float32)
        for q in range(store.num_texts):
            texts = store.texts([q], searcher.device, torch.float32)
            scores = searcher.model.similarity(texts, images)[0].float().numpy()  # (G,)
            best.append(float(scores[image_person != query_person[q]].max()))
    return best


def test_the_threshold_is_the_absent_scores_quantile(
    tiny_data: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from tasks.embed.encode import embed_split

    val = embed_split(tiny_data, checkpoint, tmp_path / "val", batch_size=5).out
    result = open_set.calibrate(val, 0.25)
    absent = np.sort(_absent_scores(val))
    assert result.queries == len(absent)
    assert result.threshold == pytest.approx(np.quantile(absent, 0.75, method="higher"), abs=1e-4)
    assert result.false_alarm == pytest.approx(np.mean(absent > result.threshold + 1e-4), abs=1e-9)
    assert result.false_alarm <= 0.25
    assert result.confidence(absent[0] - 1) == 0.0 and result.confidence(absent[-1] + 1) == 1.0
    assert result.confidence(result.threshold) == pytest.approx(0.75, abs=0.1)
    with pytest.raises(TbprError, match="between 0 and 1"):
        open_set.calibrate(val, 1.5)


def test_the_service_says_no_confident_match_below_the_threshold(checkpoint: Path, tmp_path: Path) -> None:
    from tasks.embed.folder import embed_folder

    images = write_image_folder(tmp_path / "images")
    emb = embed_folder(images, checkpoint, tmp_path / "emb", batch_size=4).out
    scores = [hit["score"] for hit in Gallery(emb).search("a man in a red coat", 3)]
    base = open_set.OpenSet(
        threshold=scores[0] + 1.0,  # nobody clears it
        false_alarm_target=0.05, false_alarm=0.05, miss_rate=0.3, queries=100,
        absent_quantiles=tuple(np.linspace(scores[-1] - 1, scores[0] + 2, open_set.QUANTILES)),
        weights_digest=weights_digest(checkpoint), val_emb="val",
    )  # fmt: skip
    open_set.write(base, checkpoint)
    client = TestClient(create_app(Gallery(emb)))
    assert client.get("/api/info").json()["open_set"] == {
        "threshold": base.threshold,
        "false_alarm": 0.05,
        "miss_rate": 0.3,
    }
    response = client.get("/api/search", params={"q": "a man in a red coat", "k": 3})
    assert response.headers["X-Tbpr-Verdict"] == "no confident match"
    hits = response.json()
    assert [h["match"] for h in hits] == [False] * 3
    assert [h["confidence"] for h in hits] == [
        pytest.approx(base.confidence(h["score"]), abs=1e-4) for h in hits
    ]
    assert 0 < hits[0]["confidence"] < 1 and hits[0]["confidence"] >= hits[-1]["confidence"]
    open_set.write(dataclasses.replace(base, threshold=scores[1] - 1e-3), checkpoint)  # the top 2 clear it
    client = TestClient(create_app(Gallery(emb)))
    response = client.get("/api/search", params={"q": "a man in a red coat", "k": 3})
    assert response.headers["X-Tbpr-Verdict"] == "match"
    assert [h["match"] for h in response.json()] == [True, True, False]
    # a calibration made for other weights is not used
    open_set.write(dataclasses.replace(base, weights_digest="sha256:other"), checkpoint)
    assert open_set.read(checkpoint) is None
    assert (
        TestClient(create_app(Gallery(emb))).get("/api/search", params={"q": "red"}).headers["X-Tbpr-Verdict"]
        == "uncalibrated"
    )


def test_tbpr_search_says_no_confident_match(checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tasks.embed.folder import embed_folder

    emb = embed_folder(
        write_image_folder(tmp_path / "images"), checkpoint, tmp_path / "emb", batch_size=4
    ).out
    top = Gallery(emb).search("a man in a red coat", 1)[0]["score"]
    quantiles = tuple(np.linspace(top - 2, top + 2, open_set.QUANTILES))  # top is the median: 50%
    calibration = open_set.OpenSet(
        top + 0.5, 0.05, 0.05, 0.3, 100, quantiles, weights_digest(checkpoint), "val"
    )
    open_set.write(calibration, checkpoint)
    command = [sys.executable, "-m", "tbpr", "search", str(emb), "a man in a red coat", "--device", "cpu"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == 0, result.stderr
    assert (
        "no confident match: the best result's confidence is 50% (threshold at 5% false alarms"
        in result.stdout
    )
