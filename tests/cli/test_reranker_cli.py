"""`tbpr score EMB --mode pruned --reranker DIR`: a tiny random BLIP ITM folder (built offline, as the
CLIP tests build theirs) re-ranks the top k of a `global` EMB, checked against BLIP's own forward pass
on each pair."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.data.reader import decode_image
from tasks.embed.layout import EmbedInfo
from tasks.embed.store import read_embeddings
from tbpr_models.rerankers import save_random_blip
from tests.cli.conftest import TbprIO
from tests.cli.test_error_paths import clear_error
from tests.score.test_run import _rankings


def test_a_tiny_local_blip_reranks_the_top_k_of_an_emb_end_to_end(
    tiny_emb: Callable[[str], Path], tbpr_io: TbprIO, tmp_path: Path
) -> None:
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    folder, emb, out, k = save_random_blip(tmp_path / "blip"), tiny_emb("global"), tmp_path / "out", 4
    args = ["score", str(emb), "--mode", "pruned", "--top-k", str(k), "--device", "cpu", "--no-track"]
    code, stdout, err = tbpr_io([*args, "--reranker", str(folder), "--out", str(out)])
    assert code == 0, err
    assert "global -> blip" in stdout
    document = json.loads((out / "metrics.json").read_text())
    queries = pq.read_table(emb / "queries.parquet").to_pydict()
    assert document["reranker"] == "blip" and document["variant"] == "blip"
    assert document["candidates"] == "global" and document["model_ref"] == str(folder.resolve())
    assert document["pairs_scored"] == document["pairs_rerank"] == k * len(queries["caption_id"])
    # independent: global's top k by numpy, each pair scored by BLIP's own forward pass, one at a time
    model = BlipForImageTextRetrieval.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    images = pq.read_table(
        Path(EmbedInfo.read(emb).data_dir) / "images.parquet", columns=["image_id", "image"]
    )
    image_of = dict(zip(images["image_id"].to_pylist(), images["image"].to_pylist(), strict=True))
    gallery = pq.read_table(emb / "gallery.parquet").column("image_id").to_numpy()
    cosine = read_embeddings(emb / "queries.parquet") @ read_embeddings(emb / "gallery.parquet").T
    ranked = _rankings(out)
    for row in range(0, len(queries["caption_id"]), 3):  # every third query: each pair is a forward pass
        query, text = queries["caption_id"][row], queries["text"][row]
        expected = {}
        for image in gallery[np.argsort(-cosine[row], kind="stable")[:k]].tolist():
            inputs = processor(images=decode_image(image_of[image]), text=text, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**inputs, use_itm_head=True).itm_score[0]
            expected[image] = float(logits[1] - logits[0])
        top = ranked[query][:k]
        assert {image for image, _ in top} == set(expected)
        np.testing.assert_allclose([s for _, s in top], [expected[i] for i, _ in top], atol=1e-4)
        assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    code, _, err = tbpr_io([*args, "--reranker", str(not_a_model), "--out", str(tmp_path / "bad")])
    clear_error(code, err, "--reranker", "config.json")
    code, _, err = tbpr_io(
        [*args, "--reranker", str(folder), "--candidates-from", str(emb), "--out", str(tmp_path / "b2")]
    )
    clear_error(code, err, "--reranker", "--candidates-from")


@pytest.mark.parametrize("mode", ["exhaustive"])
def test_a_reranker_needs_pruned_scoring(
    mode: str, tiny_emb: Callable[[str], Path], tbpr_io: TbprIO, tmp_path: Path
) -> None:
    folder = tmp_path / "blip"  # the option is checked before the folder is opened
    folder.mkdir()
    code, _, err = tbpr_io(
        [
            "score",
            str(tiny_emb("global")),
            "--mode",
            mode,
            "--reranker",
            str(folder),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    clear_error(code, err, "--reranker", "pruned")
