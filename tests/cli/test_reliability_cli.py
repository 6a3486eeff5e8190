"""Hostile inputs through the CLI (issue 32): a FIFO and a link to a folder in an image folder, an EMB
re-embedded at another precision, an EMB with arrays that disagree, a re-ranker folder whose
config.json is not an object, and cascades or re-rankers over DATA re-prepared since the embed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tbpr_models.rerankers import save_random_blip
from tests.cli.conftest import TbprIO
from tests.cli.test_error_paths import clear_error
from tests.embed.folder_images import save
from tests.score.test_data_changed import reprepared  # noqa: F401 (a fixture)

SCORE = ["--mode", "pruned", "--top-k", "4", "--index", "flat", "--device", "cpu", "--no-track"]


def test_embed_images_quarantines_a_fifo_and_a_linked_folder_and_says_when_it_re_embeds(
    tiny_checkpoint: Callable[[str], Path], tbpr_io: TbprIO, tmp_path: Path
) -> None:
    images, emb, run = tmp_path / "images", tmp_path / "emb", str(tiny_checkpoint("global"))
    save(images, "cam1/a.png", "PNG", (20, 40), "red")
    save(tmp_path / "elsewhere", "b.png", "PNG", (20, 40), "blue")
    os.mkfifo(images / "cam1" / "stream.jpg")
    (images / "cam5").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code, out, err = tbpr_io(["embed", "--images", str(images), "--out", str(emb), "--run", run])
    assert code == 0, err
    table = pq.read_table(emb / "quarantine.parquet").to_pydict()
    reasons = dict(zip(table["path"], table["reason"], strict=True))
    assert reasons["cam1/stream.jpg"].startswith("not a regular file") and reasons["cam5"].startswith(
        "symbolic link"
    )
    code, out, err = tbpr_io(
        ["embed", "--images", str(images), "--out", str(emb), "--run", run, "--precision", "bf16"]
    )
    assert code == 0, err
    assert "re-embedded every file" in out and "precision fp32 -> bf16" in " ".join(out.split())


def test_score_an_emb_whose_text_mask_disagrees_is_a_clear_error(
    tiny_emb: Callable[[str], Path], tbpr_io: TbprIO, tmp_path: Path
) -> None:
    emb = shutil.copytree(tiny_emb("cross_scan"), tmp_path / "emb")
    mask = np.load(emb / "text_mask.npy")
    np.save(emb / "text_mask.npy", mask[: len(mask) // 2])
    code, _, err = tbpr_io(
        [
            "score",
            str(emb),
            "--mode",
            "exhaustive",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--no-track",
        ]
    )
    clear_error(code, err, "text_mask.npy")


def test_a_reranker_folder_whose_config_is_not_an_object_is_a_clear_error(
    tiny_emb: Callable[[str], Path], tbpr_io: TbprIO, tmp_path: Path
) -> None:
    folder = tmp_path / "blip"
    folder.mkdir()
    for text in ("[]", "{not json", '{"model_type": ["blip"]}'):
        (folder / "config.json").write_text(text)
        code, _, err = tbpr_io(
            [
                "score",
                str(tiny_emb("global")),
                *SCORE,
                "--reranker",
                str(folder),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        clear_error(code, err, "--reranker", "config.json")


def test_cascades_and_rerankers_over_re_prepared_data_are_refused_naming_both_hashes(
    reprepared: tuple[Path, Path, Path],  # noqa: F811 (the imported fixture)
    tbpr_io: TbprIO,
    tmp_path: Path,
) -> None:
    data, before, after = reprepared
    code, _, err = tbpr_io(
        ["score", str(before), *SCORE, "--candidates-from", str(after), "--out", str(tmp_path / "a")]
    )
    clear_error(code, err, "embedded from different DATA", str(before), str(after))
    blip = save_random_blip(tmp_path / "blip")
    code, _, err = tbpr_io(
        ["score", str(before), *SCORE, "--reranker", str(blip), "--out", str(tmp_path / "b")]
    )
    clear_error(code, err, "changed since these embeddings were made", str(data))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
