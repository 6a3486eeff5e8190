"""Bad input through every command, in process (`tbpr.cli.main`): exit status 2, a one-paragraph message
without a traceback, nothing written or changed; and the faults (a run killed mid-write, stale files)
that must leave no debris and lose nothing.

Why this file is over ~400 lines: the error paths of every command are tables of cases (`MATRIX`:
each command x each kind of bad path; `OUT_FOLDERS`; damaged files) sharing one set of builders of
bad files, folders and warehouses, so that a new command's error path is one more row here."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.files import temp_path
from tasks.embed.encode import embed_split

Tbpr = Callable[[list[str]], tuple[int, str]]  # the `tbpr` fixture of tests/cli/conftest.py

TINY_TRAIN = [
    "--set", "model.text.kind=small", "--set", "model.image.kind=resnet_small", "--set", "model.embed_dim=16",
    "--set", "model.image.height=64", "--set", "model.image.width=32", "--set", "model.text.max_length=16",
    "--set", "batch_size=4", "--device", "cpu", "--no-progress",
]  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256: what must not change."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clear_error(code: int, err: str, *words: str) -> None:
    """Exit 2, no traceback, and one `error:` paragraph (after any library log lines) naming `words`."""
    assert code == 2, err
    assert "Traceback" not in err and "\nerror:" in f"\n{err}", err
    message = err[err.find("error:") if err.startswith("error:") else err.find("\nerror:") + 1 :]
    assert message.count("error:") == 1 and "\n\n" not in message.strip(), message
    text = " ".join(message.split())
    for word in words:
        assert word in text, text


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("TBPR_HOME", str(root))
    return root


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (["--set", "sampler=identity", "--set", "captions_per_identity=8"], ["captions_per_identity"]),
        (["--set", "model.text.kind=nosuch"], ["text.kind", "nosuch"]),
        (["--set", "model.embed_dim=-5"], ["embed_dim"]),
        (["--set", "model.image.kind=hf_vision"], ["image.path"]),
        (["--set", "model.image.kind=clip"], ["image.path"]),
        (
            ["--set", "model.text.kind=clip", "--set", "model.text.path=/no/such/clip"],
            ["/no/such/clip", "does not exist"],
        ),
        (["--profile", "irra"], ["irra", "global", "heads"]),  # the preset's head settings are not global's
        (["--set", "model.image.height=abc"], ["image.height"]),
        (["--set", "model.variant.nosuch=1"], ["nosuch"]),
        (["--set", "epochs=0"], ["epochs"]),
    ],
)
def test_bad_train_settings_are_refused_before_anything_runs(
    settings: list[str],
    words: list[str],
    prepared_data: Path,
    home: Path,
    tbpr: Tbpr,
) -> None:
    before = snapshot(prepared_data)
    code, err = tbpr(["train", str(prepared_data), "--variant", "global", *TINY_TRAIN, *settings])
    clear_error(code, err, *words)
    assert snapshot(prepared_data) == before and not (home / "runs").exists()
    assert not (home / "mlflow.db").exists()  # no store created for a command that never ran


def test_irra_preset_without_the_clip_folder_is_a_clear_error(
    prepared_data: Path, home: Path, tbpr: Tbpr
) -> None:
    code, err = tbpr(
        ["train", str(prepared_data), "--variant", "cross_fusion", "--profile", "irra", "--device", "cpu"]
    )
    clear_error(code, err, "CLIP folder", "clip-vit-base-patch16", "does not exist")
    code, err = tbpr(["run", "--profile", "irra", "--set", "data.source=/no/such/data"])
    clear_error(code, err, "CLIP folder", "clip-vit-base-patch16")
    assert not (home / "mlflow.db").exists()


def test_a_run_that_cannot_write_ends_failed_and_resume_starts_afresh(
    prepared_data: Path,
    home: Path,
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    from mlflow import MlflowClient

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = ["train", str(prepared_data), "--variant", "global", "--epochs", "1", *TINY_TRAIN]
    code, err = tbpr([*args, "--set", f"output_dir={blocker}"])
    clear_error(code, err, str(blocker))
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs == []  # refused before a run was opened (`check_train_output`): none left RUNNING
    # --resume of the same config skips the run that never had a folder (it was a KeyError)
    code, err = tbpr([*args, "--resume", "--set", f"output_dir={tmp_path / 'ok'}"])
    assert code == 0, err
    assert (tmp_path / "ok" / "epoch_001").is_dir()


def test_sigterm_marks_the_run_killed(prepared_data: Path, home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    script = (
        "import os, signal, sys\n"
        "from tasks.train.config import TrainConfig\n"
        "from tasks.train.loop import train_variant\n"
        f"config = TrainConfig(variant='global', epochs=3, batch_size=4, device='cpu', output_dir={str(tmp_path / 'out')!r},"
        " model={'text': {'kind': 'small'}, 'image': {'kind': 'resnet_small', 'height': 64, 'width': 32}, 'embed_dim': 16})\n"
        "def stop(record):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "try:\n"
        f"    train_variant({str(prepared_data)!r}, config, progress=False, on_epoch_end=stop)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(143)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "TBPR_HOME": str(home)}, timeout=300
    )
    assert done.returncode == 143
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"]


def test_synth_with_zero_workers_writes_nothing(
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    code, err = tbpr(["synth", str(tmp_path / "out"), "-n", "8", "--workers", "0"])
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def emb(tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path) -> Path:
    out = tmp_path / "emb"
    embed_split(tiny_data, tiny_checkpoint("global"), out, batch_size=8, indexes=("flat", "hnsw"))
    return out


def test_re_embedding_drops_indexes_it_no_longer_builds(
    emb: Path,
    tiny_data: Path,
    tiny_checkpoint: Callable[[str], Path],
    tbpr: Tbpr,
) -> None:
    assert (emb / "index_hnsw.faiss").is_file()
    embed_split(tiny_data, tiny_checkpoint("global"), emb, batch_size=8, indexes=("flat",))
    assert not (emb / "index_hnsw.faiss").exists()  # a stale index would miss re-embedded images
    code, err = tbpr(["score", str(emb), "--mode", "pruned", "--index", "hnsw", "--out", str(emb.parent / "o"),
                      "--no-track"])  # fmt: skip
    clear_error(code, err, "no 'hnsw' index", "flat")
    code, err = tbpr(["search", str(emb), "a man in red", "--index", "hnsw"])
    clear_error(code, err, "no 'hnsw' index")
    assert not (emb.parent / "o").exists()


def test_an_index_that_does_not_match_the_gallery_is_refused(
    emb: Path, tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tbpr: Tbpr,
) -> None:  # fmt: skip
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(16)
    index.add(np.zeros((3, 16), dtype=np.float32))
    faiss.write_index(index, str(emb / "index_flat.faiss"))  # 3 images, the gallery has 16
    code, err = tbpr(["score", str(emb), "--mode", "pruned", "--out", str(emb.parent / "o"), "--no-track"])  # fmt: skip
    clear_error(code, err, "holds 3 images", "re-run `tbpr embed`")


@pytest.mark.parametrize(
    "damage",
    [
        "truncated_weights",
        "pickle_weights",
        "config_not_json",
        "config_wrong_fields",
        "config_a_list",
        "config_tower_not_a_table",
        "config_field_of_the_wrong_type",
        "weights_missing",
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error(
    damage: str,
    tiny_data: Path,
    tiny_checkpoint: Callable[[str], Path],
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    import shutil

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("global"), checkpoint)
    weights, config = checkpoint / "model.safetensors", checkpoint / "config.json"
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "pickle_weights":
        weights.write_bytes(pickle.dumps({"a": 1}))
    elif damage == "config_not_json":
        config.write_text("{not json")
    elif damage == "config_wrong_fields":
        config.write_text(json.dumps({"variant": {"kind": "global"}, "embed_dim": "big"}))
    elif damage == "config_a_list":
        config.write_text(json.dumps([json.loads(config.read_text())]))
    elif damage == "config_tower_not_a_table":
        config.write_text(json.dumps({**json.loads(config.read_text()), "text": "small"}))
    elif damage == "config_field_of_the_wrong_type":
        settings = json.loads(config.read_text())
        config.write_text(json.dumps({**settings, "image": {**settings["image"], "pretrained": "no"}}))
    else:
        weights.unlink()
    before = snapshot(checkpoint)
    out = tmp_path / "emb"
    code, err = tbpr(["embed", str(tiny_data), "--run", str(checkpoint), "--out", str(out)])
    clear_error(code, err)
    assert not out.exists() and snapshot(checkpoint) == before


@pytest.mark.parametrize("damage", ["embed_json", "faiss", "npy", "gallery_parquet"])
def test_a_damaged_emb_is_a_clear_error(
    damage: str,
    emb: Path,
    tbpr: Tbpr,
) -> None:
    target = {
        "embed_json": emb / "embed.json",
        "faiss": emb / "index_flat.faiss",
        "npy": emb / "image_local.npy",
        "gallery_parquet": emb / "gallery.parquet",
    }[damage]
    target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 3)])
    out = emb.parent / "out"
    code, err = tbpr(["score", str(emb), "--mode", "pruned", "--out", str(out), "--no-track"])
    clear_error(code, err)
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_local_unit", '"false"'), ("embed_id", "7"), ("num_images", '"many"'), ("num_queries", "NaN")],
)
def test_an_embed_json_field_of_the_wrong_type_is_a_clear_error(
    field: str, value: str, emb: Path, tbpr: Tbpr
) -> None:
    """A string "false" would be truthy: taken as True, scoring would skip normalising raw tokens."""
    info = emb / "embed.json"
    text = info.read_text()
    start = text.index(f'"{field}": ')
    info.write_text(text[:start] + f'"{field}": {value}' + text[text.index(",", start) :])
    out = emb.parent / "out"
    code, err = tbpr(["score", str(emb), "--mode", "pruned", "--out", str(out), "--no-track"])
    clear_error(code, err)
    assert "damaged" in err and field in err and not (out / "metrics.json").exists()


def test_an_embed_json_of_the_wrong_shape_is_a_clear_error(emb: Path, tbpr: Tbpr) -> None:
    (emb / "embed.json").write_text(json.dumps([json.loads((emb / "embed.json").read_text())]))
    out = emb.parent / "out"
    code, err = tbpr(["score", str(emb), "--mode", "exhaustive", "--out", str(out), "--no-track"])
    clear_error(code, err, "embed.json", "damaged", "list")
    assert not (out / "metrics.json").exists()


def test_an_interrupted_re_embed_keeps_the_previous_emb_and_leaves_no_debris(
    emb: Path, tiny_data: Path, tiny_checkpoint: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.embed.encode as encode

    before = snapshot(emb)
    dead = temp_path(emb).with_name(f".{emb.name}.999999999.dead.tmp")  # a SIGKILLed run's folder
    dead.mkdir()
    (dead / "image_local.npy").write_bytes(b"half")

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(encode, "build_index", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed_split(tiny_data, tiny_checkpoint("channel"), emb, batch_size=8, indexes=("flat",))
    assert snapshot(emb) == before  # the previous EMB, whole
    assert sorted(p.name for p in emb.parent.iterdir() if p.name != "o") == ["emb"]  # no temporaries


def test_sql_cannot_write_files(
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    warehouse = tmp_path / "w.duckdb"
    con = duckdb.connect(str(warehouse))
    con.sql("CREATE TABLE t AS SELECT 1 AS a")
    con.close()
    target = tmp_path / "leak.csv"
    query = tmp_path / "copy.sql"
    query.write_text(f"COPY (SELECT * FROM t) TO '{target}'")
    code, err = tbpr(["sql", str(query), "--warehouse", str(warehouse)])
    clear_error(code, err)
    assert not target.exists()
    query.write_text(f"SELECT * FROM read_csv('{query}')")  # nor read other files
    code, err = tbpr(["sql", str(query), "--warehouse", str(warehouse)])
    clear_error(code, err)


@pytest.mark.parametrize("bad", ["not_duckdb", "binary_sql"])
def test_sql_bad_inputs(
    bad: str,
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    warehouse, query = tmp_path / "w.duckdb", tmp_path / "q.sql"
    if bad == "not_duckdb":
        warehouse.write_text("hello")
        query.write_text("SELECT 1")
    else:
        con = duckdb.connect(str(warehouse))
        con.close()
        query.write_bytes(b"\xff\xfe\x00\x81binary")
    before = snapshot(tmp_path)
    code, err = tbpr(["sql", str(query), "--warehouse", str(warehouse)])
    clear_error(code, err)
    assert snapshot(tmp_path) == before


def test_prepare_quarantines_a_fifo_and_a_symlink_loop_and_refuses_deep_json(
    tmp_path: Path, write_source: Callable[..., Path], make_png: Callable[..., bytes],
    tbpr: Tbpr,
) -> None:  # fmt: skip
    records = [
        {"id": 1, "file_path": "a.png", "captions": ["a man in red"], "split": "train"},
        {"id": 2, "file_path": "fifo.png", "captions": ["a man in blue"], "split": "train"},
        {"id": 3, "file_path": "loop/x.png", "captions": ["a woman in green"], "split": "test"},
    ]
    source = write_source(tmp_path / "src", records, {"a.png": make_png(1)})
    os.mkfifo(source / "imgs" / "fifo.png")
    (source / "imgs" / "loop").symlink_to(source / "imgs" / "loop")
    out = tmp_path / "data"
    code, err = tbpr(["prepare", str(source), "--format", "cuhk-pedes", "--out", str(out)])
    assert code == 0, err
    reasons = {r["record_index"]: r["reason"] for r in pq.read_table(out / "quarantine.parquet").to_pylist()}
    assert reasons[1] == "not a regular file" and 2 in reasons
    assert [r["image_id"] for r in pq.read_table(out / "images.parquet", columns=["image_id"]).to_pylist()]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    deep = tmp_path / "deep"
    (deep / "imgs").mkdir(parents=True)
    (deep / "reid_raw.json").write_text("[" * 100_000 + "]" * 100_000)
    code, err = tbpr(["prepare", str(deep), "--format", "cuhk-pedes", "--out", str(tmp_path / "d2")])
    clear_error(code, err, "nests JSON too deeply")
    assert not (tmp_path / "d2").exists()


def test_prepare_removes_what_a_killed_run_left(
    tmp_path: Path, write_source: Callable[..., Path], make_png: Callable[..., bytes]
) -> None:
    from tasks.data.prepare import prepare_dataset

    records = [{"id": 1, "file_path": "a.png", "captions": ["a man in red"], "split": "train"}]
    source = write_source(tmp_path / "src", records, {"a.png": make_png(1)})
    out = tmp_path / "data"
    out.mkdir()
    debris = out / ".images.parquet.999999999.dead.tmp"  # from a process that no longer runs
    debris.write_bytes(b"x" * 1000)
    alive = out / f".images.parquet.{os.getpid()}.alive.tmp"  # from a running one: left alone
    alive.write_bytes(b"y")
    prepare_dataset(source, "cuhk-pedes", out, progress=False)
    assert not debris.exists() and alive.exists()


def test_checkpoints_get_the_mode_of_every_other_output(tiny_checkpoint: Callable[[str], Path]) -> None:
    folder = tiny_checkpoint("global")
    weights, config = (folder / "model.safetensors").stat().st_mode, (folder / "config.json").stat().st_mode
    assert weights & 0o777 == config & 0o777 and weights & 0o044  # readable by group and others, not 0600


@pytest.mark.parametrize("bad", ["out_is_a_file", "manifest_not_json", "images_truncated"])
def test_embed_bad_paths_and_damaged_data(
    bad: str, tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path, tbpr: Tbpr
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "emb"
    if bad == "out_is_a_file":
        out.write_text("keep me")
    elif bad == "manifest_not_json":
        (data / "manifest.json").write_text("{")
    else:
        images = data / "images.parquet"
        images.write_bytes(images.read_bytes()[:200])
    before = snapshot(tmp_path)
    code, err = tbpr(["embed", str(data), "--run", str(tiny_checkpoint("global")), "--out", str(out)])
    clear_error(code, err)
    assert snapshot(tmp_path) == before


def test_search_with_an_unwritable_sheet_is_a_clear_error(emb: Path, tmp_path: Path, tbpr: Tbpr) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    sheet = blocker / "sheet.png"  # its folder is a file
    code, err = tbpr(["search", str(emb), "a man in a red jacket", "--sheet", str(sheet)])
    clear_error(code, err, "contact sheet")
    assert blocker.read_text() == "keep"


# The matrix: every command x each class of bad input. Each case builds its arguments in `tmp_path`
# (fixtures give real DATA and EMB folders); `usage` cases are rejected by the command line parser
# (typer's usage error, exit 2), the others by tbpr with an `error:` paragraph.
def _file(tmp: Path, name: str, content: bytes = b"x") -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def _dir(tmp: Path, name: str) -> str:
    (tmp / name).mkdir(exist_ok=True)
    return str(tmp / name)


MATRIX: dict[str, tuple[Callable[[Path, Path, Path], list[str]], bool]] = {
    # synth
    "synth/out-is-a-file": (lambda t, d, e: ["synth", _file(t, "f"), "-n", "8"], False),
    "synth/out-under-a-file": (lambda t, d, e: ["synth", _file(t, "f") + "/out", "-n", "8"], False),
    "synth/too-few-identities": (lambda t, d, e: ["synth", str(t / "o"), "-n", "1"], False),
    # prepare
    "prepare/missing": (
        lambda t, d, e: ["prepare", str(t / "none"), "--format", "cuhk-pedes", "--out", str(t / "o")],
        False,
    ),
    "prepare/a-file": (
        lambda t, d, e: ["prepare", _file(t, "f"), "--format", "cuhk-pedes", "--out", str(t / "o")],
        False,
    ),
    "prepare/empty-folder": (
        lambda t, d, e: ["prepare", _dir(t, "s"), "--format", "rstpreid", "--out", str(t / "o")],
        False,
    ),
    "prepare/empty-annotation": (
        lambda t, d, e: [
            "prepare",
            str(Path(_file(Path(_dir(t, "s")), "reid_raw.json", b"")).parent),
            "--format",
            "cuhk-pedes",
            "--out",
            str(t / "o"),
        ],
        False,
    ),
    "prepare/truncated-annotation": (
        lambda t, d, e: [
            "prepare",
            str(Path(_file(Path(_dir(t, "s")), "reid_raw.json", b'[{"id": 1, "file')).parent),
            "--format",
            "cuhk-pedes",
            "--out",
            str(t / "o"),
        ],
        False,
    ),
    "prepare/unknown-format": (
        lambda t, d, e: ["prepare", str(d), "--format", "market1501", "--out", str(t / "o")],
        True,
    ),
    "prepare/zero-workers": (
        lambda t, d, e: ["prepare", str(d), "--format", "cuhk-pedes", "--workers", "0"],
        True,
    ),
    # train
    "train/missing-data": (lambda t, d, e: ["train", str(t / "none"), "--variant", "global"], False),
    "train/data-is-a-file": (lambda t, d, e: ["train", _file(t, "f"), "--variant", "global"], False),
    "train/empty-data": (lambda t, d, e: ["train", _dir(t, "d"), "--variant", "global"], False),
    "train/zero-epochs": (lambda t, d, e: ["train", str(d), "--variant", "global", "--epochs", "0"], True),
    "train/bad-set-syntax": (lambda t, d, e: ["train", str(d), "--variant", "global", "--set", "lr"], False),
    "train/wrong-type": (lambda t, d, e: ["train", str(d), "--variant", "global", "--set", "lr=fast"], False),
    # embed
    "embed/missing-run": (
        lambda t, d, e: ["embed", str(d), "--run", str(t / "none"), "--out", str(t / "o")],
        False,
    ),
    "embed/run-is-an-empty-folder": (
        lambda t, d, e: ["embed", str(d), "--run", _dir(t, "r"), "--out", str(t / "o")],
        False,
    ),
    "embed/zero-batch": (lambda t, d, e: ["embed", str(d), "--run", "x", "--batch-size", "0"], True),
    "embed/unknown-split": (
        lambda t, d, e: [
            "embed",
            str(d),
            "--run",
            str(Path(json.loads((e / "embed.json").read_text())["checkpoint"])),
            "--split",
            "dev",
            "--out",
            str(t / "o"),
        ],
        False,
    ),
    # score
    "score/missing-emb": (
        lambda t, d, e: ["score", str(t / "none"), "--mode", "exhaustive", "--out", str(t / "o")],
        False,
    ),
    "score/empty-emb": (
        lambda t, d, e: ["score", _dir(t, "e"), "--mode", "exhaustive", "--out", str(t / "o")],
        False,
    ),
    "score/zero-top-k": (
        lambda t, d, e: ["score", str(e), "--mode", "pruned", "--top-k", "0", "--out", str(t / "o")],
        True,
    ),
    "score/negative-budget": (
        lambda t, d, e: [
            "score",
            str(e),
            "--mode",
            "exhaustive",
            "--memory-budget-mb",
            "-1",
            "--out",
            str(t / "o"),
            "--no-track",
        ],
        True,
    ),
    "score/out-is-a-file": (
        lambda t, d, e: ["score", str(e), "--mode", "exhaustive", "--out", _file(t, "f"), "--no-track"],
        False,
    ),
    # search
    "search/empty-text": (lambda t, d, e: ["search", str(e), "   "], False),
    "search/zero-top-k": (lambda t, d, e: ["search", str(e), "a man", "--top-k", "0"], True),
    "search/missing-emb": (lambda t, d, e: ["search", str(t / "none"), "a man"], False),
    # run
    "run/missing-config": (lambda t, d, e: ["run", "--config", str(t / "none.toml")], False),
    "run/config-not-toml": (lambda t, d, e: ["run", "--config", _file(t, "c.toml", b"[train\n")], False),
    "run/unknown-profile": (lambda t, d, e: ["run", "--profile", "medium"], False),
    "run/unknown-key": (lambda t, d, e: ["run", "--profile", "quick", "--set", "train.nosuch=1"], False),
    "run/unknown-variant": (
        lambda t, d, e: ["run", "--profile", "quick", "--set", 'train.variants=["nosuch"]'],
        False,
    ),
    "run/wrong-range": (
        lambda t, d, e: ["run", "--profile", "quick", "--set", "data.synth.identities=0"],
        False,
    ),
    "run/name-climbs-out-of-home": (
        lambda t, d, e: ["run", "--profile", "quick", "--set", "name=../../.."],
        False,
    ),
    "run/name-with-a-slash": (lambda t, d, e: ["run", "--profile", "quick", "--set", f"name={t}/x"], False),
    # sql
    "sql/unknown-query": (lambda t, d, e: ["sql", "no_such_query"], False),
    "sql/missing-warehouse": (
        lambda t, d, e: ["sql", "leaderboard", "--warehouse", str(t / "none.duckdb")],
        False,
    ),
    "sql/empty-query-file": (
        lambda t, d, e: ["sql", _file(t, "q.sql", b""), "--warehouse", _warehouse(t)],
        False,
    ),
}


def _warehouse(tmp: Path) -> str:
    path = tmp / "w.duckdb"
    duckdb.connect(str(path)).close()
    return str(path)


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_command_refuses_each_class_of_bad_input(
    case: str, tiny_data: Path, tiny_emb: Callable[[str], Path], tmp_path: Path, home: Path, tbpr: Tbpr
) -> None:
    build, usage = MATRIX[case]
    work = tmp_path / "work"
    work.mkdir()
    args = build(work, tiny_data, tiny_emb("global"))
    before = snapshot(tmp_path), snapshot(tiny_data)
    code, err = tbpr(args)
    if usage:
        assert code == 2 and "Traceback" not in err and ("Invalid value" in err or "No such option" in err), (
            err
        )
    else:
        clear_error(code, err)
    assert (snapshot(tmp_path), snapshot(tiny_data)) == before  # nothing written or changed
    assert not home.exists()  # no TBPR_HOME, no MLflow store, for a command that never ran


def test_an_interrupted_re_score_leaves_no_result_that_mixes_two_runs(
    tiny_emb: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.score.run as run
    from tasks.report.warehouse import sync
    from tasks.tracking.config import TrackingConfig
    from tasks.tracking.store import Tracker

    out = tmp_path / "out"
    run.score(tiny_emb("global"), out, mode="exhaustive", track=False)
    assert (out / "metrics.json").is_file()
    written = run.write_parquet_atomic

    def stop_after_rankings(table: object, path: Path) -> Path:
        if path.name == "per_query.parquet":
            raise KeyboardInterrupt
        return written(table, path)  # type: ignore[arg-type]

    monkeypatch.setattr(run, "write_parquet_atomic", stop_after_rankings)
    with pytest.raises(KeyboardInterrupt):
        run.score(tiny_emb("channel"), out, mode="exhaustive", track=False)
    assert not (out / "metrics.json").exists()  # the old metrics no longer claim the new rankings
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    Tracker(tracking).experiment_id("tiny")
    summary = sync(tmp_path / "mlflow.db", tmp_path / "w.duckdb", str(out / "rankings.parquet"))
    assert summary.rankings_files == 0  # the warehouse skips the interrupted job
    monkeypatch.setattr(run, "write_parquet_atomic", written)
    run.score(tiny_emb("channel"), out, mode="exhaustive", track=False)  # a re-run completes it
    assert json.loads((out / "metrics.json").read_text())["variant"] == "channel"


def test_python_dash_m_tbpr_is_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tbpr", "sql", "no_such_query"], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, env={**os.environ, "TBPR_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 2 and "no query 'no_such_query'" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


# Output folders: a command writes a new or empty folder, or replaces its own earlier output; never
# the user's files, its inputs, or TBPR_HOME's stores (exit 2, nothing touched).
def _user_folder(tmp: Path) -> str:
    folder = Path(_dir(tmp, "mine"))
    _file(folder, "thesis.tex", b"years of work")
    _file(Path(_dir(folder, "figures")), "plot.png", b"png")
    return str(folder)


def _checkpoint_of(emb: Path) -> str:
    return str(json.loads((emb / "embed.json").read_text())["checkpoint"])


def _embed(data: Path, emb: Path, out: Path | str, run: str | None = None) -> list[str]:
    return ["embed", str(data), "--run", run or _checkpoint_of(emb), "--out", str(out)]


def _score(emb: Path, out: Path | str) -> list[str]:
    return ["score", str(emb), "--mode", "exhaustive", "--out", str(out), "--no-track"]


def _prepare(source: Path, out: Path | str) -> list[str]:
    return ["prepare", str(source), "--format", "cuhk-pedes", "--out", str(out)]


def _train(data: Path, out: Path | str) -> list[str]:
    return ["train", str(data), "--variant", "global", "--set", f"output_dir={out}"]


def _checkpoint_copy(tmp: Path, emb: Path) -> str:
    import shutil

    return str(shutil.copytree(_checkpoint_of(emb), tmp / "w" / "ckpt"))


# (work, DATA copy, EMB, TBPR_HOME, source) -> arguments; and the words of the error
OUT_FOLDERS: dict[str, tuple[Callable[[Path, Path, Path, Path, Path], list[str]], list[str]]] = {
    "embed/users-files": (
        lambda t, d, e, h, s: _embed(d, e, _user_folder(t)),
        ["did not write", "embed.json"],
    ),
    "embed/out-is-data": (lambda t, d, e, h, s: _embed(d, e, d), ["overlaps the DATA folder"]),
    "embed/out-inside-data": (lambda t, d, e, h, s: _embed(d, e, d / "emb"), ["overlaps the DATA folder"]),
    "embed/out-holds-checkpoint": (
        lambda t, d, e, h, s: _embed(d, e, t / "w", run=_checkpoint_copy(t, e)),
        ["overlaps the checkpoint"],
    ),
    "embed/home-runs": (lambda t, d, e, h, s: _embed(d, e, h / "runs"), ["runs store"]),
    "embed/inside-artifacts": (
        lambda t, d, e, h, s: _embed(d, e, h / "mlartifacts" / "x"),
        ["MLflow artifacts"],
    ),
    "score/users-files": (
        lambda t, d, e, h, s: _score(e, _user_folder(t)),
        ["did not write", "metrics.json"],
    ),
    "score/out-is-emb": (lambda t, d, e, h, s: _score(e, e), ["overlaps the EMB folder"]),
    "score/out-inside-emb": (lambda t, d, e, h, s: _score(e, e / "o"), ["overlaps the EMB folder"]),
    "score/home-data": (lambda t, d, e, h, s: _score(e, h / "data"), ["data store"]),
    "prepare/users-files": (
        lambda t, d, e, h, s: _prepare(s, _user_folder(t)),
        ["did not write", "manifest.json"],
    ),
    "prepare/out-inside-source": (lambda t, d, e, h, s: _prepare(s, s / "d"), ["overlaps the source folder"]),
    "prepare/home-data": (lambda t, d, e, h, s: _prepare(s, h / "data"), ["data store"]),
    "train/users-files": (
        lambda t, d, e, h, s: _train(d, _user_folder(t)),
        ["did not write", "train_config"],
    ),
    "train/out-inside-data": (lambda t, d, e, h, s: _train(d, d / "ckpt"), ["overlaps the DATA folder"]),
    "train/inside-artifacts": (
        lambda t, d, e, h, s: _train(d, h / "mlartifacts" / "x"),
        ["MLflow artifacts"],
    ),
    "synth/home": (lambda t, d, e, h, s: ["synth", str(h), "-n", "8"], ["TBPR_HOME"]),
    "synth/holds-home": (lambda t, d, e, h, s: ["synth", str(h.parent), "-n", "8"], ["TBPR_HOME"]),
}


@pytest.mark.parametrize("case", sorted(OUT_FOLDERS))
def test_no_command_writes_over_the_users_files_its_inputs_or_the_home_stores(
    case: str, tiny_data: Path, tiny_emb: Callable[[str], Path], tmp_path: Path, home: Path, tbpr: Tbpr,
    write_source: Callable[..., Path], make_png: Callable[..., bytes],
) -> None:  # fmt: skip
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    source = write_source(tmp_path / "src", [{"id": 1, "file_path": "a.png", "captions": ["a man"], "split": "train"}],
                          {"a.png": make_png(1)})  # fmt: skip
    for store in ("runs", "data", "mlartifacts"):
        (home / store).mkdir(parents=True)
        _file(home / store, "kept.txt", b"kept")
    _file(home, "mlflow.db", b"not really sqlite")
    work = tmp_path / "work"
    work.mkdir()
    args = OUT_FOLDERS[case][0](work, data, tiny_emb("global"), home, source)
    before = snapshot(tmp_path), snapshot(tiny_emb("global"))
    code, err = tbpr(args)
    clear_error(code, err, *OUT_FOLDERS[case][1])
    assert (snapshot(tmp_path), snapshot(tiny_emb("global"))) == before


def test_an_empty_folder_or_the_commands_own_output_may_be_written(
    tiny_data: Path, tiny_emb: Callable[[str], Path], tmp_path: Path, home: Path, tbpr: Tbpr,
    write_source: Callable[..., Path], make_png: Callable[..., bytes],
) -> None:  # fmt: skip
    emb, out = tmp_path / "emb", tmp_path / "out"
    emb.mkdir()
    run = _checkpoint_of(tiny_emb("global"))
    for _ in range(2):  # into an empty folder, then over its own EMB
        code, err = tbpr(["embed", str(tiny_data), "--run", run, "--out", str(emb), "--index", "flat"])
        assert code == 0, err
        code, err = tbpr(["score", str(emb), "--mode", "exhaustive", "--out", str(out), "--no-track"])
        assert code == 0, err
    assert (out / "metrics.json").is_file() and (emb / "embed.json").is_file()
    source = write_source(tmp_path / "src", [{"id": 1, "file_path": "a.png", "captions": ["a man"], "split": "train"}],
                          {"a.png": make_png(1)})  # fmt: skip
    code, err = tbpr(["prepare", str(source), "--format", "cuhk-pedes"])  # default: one folder per source
    assert code == 0, err
    assert (home / "data" / "src-cuhk-pedes" / "manifest.json").is_file()
    assert sorted(p.name for p in (home / "data").iterdir()) == ["src-cuhk-pedes"]


@pytest.mark.parametrize("store", ["no-store", "store-without-the-run"])
def test_score_with_an_unknown_parent_run_writes_nothing(
    store: str, tiny_emb: Callable[[str], Path], tmp_path: Path, home: Path, tbpr: Tbpr
) -> None:
    from mlflow import MlflowClient

    from tasks.tracking.config import TrackingConfig
    from tasks.tracking.store import Tracker

    if store != "no-store":
        Tracker().experiment_id("tiny")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    args = [*_score(tiny_emb("global"), out)[:-1], "--parent-run-id", "0123456789abcdef0123456789abcdef"]
    code, err = tbpr(args)
    clear_error(code, err, "--parent-run-id", "0123456789abcdef0123456789abcdef", "is not a run")
    assert snapshot(tmp_path) == before and not out.exists()
    if store != "no-store":
        client = MlflowClient(TrackingConfig().resolved_tracking_uri())
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


# Inputs are validated when opened: a DATA folder that contradicts its layout or itself, settings that
# are not finite, unknown or wrong for the chosen encoder, and user text that looks like rich markup end
# in one `error:` paragraph or print literally, never in a traceback.
TbprIO = Callable[[list[str]], tuple[int, str, str]]  # the `tbpr_io` fixture of tests/cli/conftest.py
MARKUP = "a [bold]b[/] [/] :smile: c"  # markup rich would style, a stray closing tag, an emoji code


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (["--set", "lr=Infinity"], ["lr", "finite"]),
        (["--set", "lr=NaN"], ["lr", "finite"]),
        (["--set", "model.init_temperature=Infinity"], ["init_temperature", "finite"]),
        (["--set", "model.loss_weights.sdm=NaN"], ["loss_weights"]),
        (["--set", "model.loss_weights.bogus=1"], ["loss_weights", "bogus", "sdm"]),
        (["--set", "model.image.pretrained=abc"], ["image.pretrained", "true or false"]),
        (["--set", 'model.image.widths=[8, "a"]'], ["image.widths", "integers"]),
        (["--set", "model.text.path=5"], ["text.path"]),
        (["--set", "model.image=5"], ["image", "table"]),
        (
            ["--set", "model.text.max_length=5000", "--set", "model.text.kind=minilm"],
            ["text.max_length", "512"],
        ),
        (["--set", "model.image.freeze_stages=99"], ["image.freeze_stages", "5 stages", "at most 5"]),
    ],
)
def test_bad_settings_of_every_type_are_refused(
    settings: list[str], words: list[str], tiny_data: Path, home: Path, tbpr: Tbpr
) -> None:
    code, err = tbpr(["train", str(tiny_data), "--variant", "global", *TINY_TRAIN, *settings])
    clear_error(code, err, *words)
    assert not home.exists()


def test_a_minilm_default_carried_onto_clip_names_the_setting(
    tiny_data: Path, tiny_clip: Path, home: Path, tbpr: Tbpr
) -> None:
    clip = [*TINY_TRAIN, "--set", "model.text.kind=clip", "--set", f"model.text.path={tiny_clip}"]
    code, err = tbpr(["train", str(tiny_data), "--variant", "global", *clip])
    clear_error(code, err, "text.freeze_layers", "2 layers", "at most 2")
    fits_depth = ["--set", "model.text.freeze_layers=2", "--set", "model.text.max_length=48"]
    code, err = tbpr(["train", str(tiny_data), "--variant", "global", *clip, *fits_depth])
    clear_error(code, err, "text.max_length", "32 positions")
    assert not home.exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.per_variant.global.model.bogus=1", ["per_variant.global", "bogus"]),
        ("train.per_variant.global.lr=Infinity", ["per_variant.global", "lr"]),
        ("train.per_variant.nosuch.lr=0.1", ["per_variant.nosuch", "unknown variant"]),
        ("train.config.model.loss_weights.bogus=1", ["loss_weights", "bogus"]),
        ("train.config.lr=Infinity", ["train.config.lr", "finite"]),
        ("train.backbone.lr=NaN", ["train.backbone.lr", "finite"]),
    ],
)
def test_bad_run_settings_are_refused_in_nested_tables(
    override: str, words: list[str], home: Path, tbpr: Tbpr
) -> None:
    code, err = tbpr(["run", "--profile", "quick", "--set", override])
    clear_error(code, err, *words)
    assert not home.exists()


def _set_column(path: Path, column: str, values: pa.Array) -> None:
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, values), path)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("text_of_integers", ["captions.parquet", "'text'", "int64"]),
        ("manifest_a_list", ["manifest.json", "list"]),
        ("person_differs", ["captions.parquet", "row 0", "person_id"]),
    ],
)
def test_data_that_contradicts_its_layout_or_itself_is_a_clear_error(
    damage: str,
    words: list[str],
    tiny_data: Path,
    tiny_checkpoint: Callable[[str], Path],
    tmp_path: Path,
    tbpr: Tbpr,
) -> None:
    data = tmp_path / "data"
    import shutil

    shutil.copytree(tiny_data, data)
    captions = data / "captions.parquet"
    rows = pq.read_metadata(captions).num_rows
    if damage == "text_of_integers":
        _set_column(captions, "text", pa.array(range(rows), pa.int64()))
    elif damage == "manifest_a_list":
        (data / "manifest.json").write_text(json.dumps([{"dataset": "tiny"}]))
    else:
        pids = pq.read_table(captions)["person_id"].to_pylist()
        _set_column(captions, "person_id", pa.array([pids[0] + 1, *pids[1:]], pa.int64()))
    before = snapshot(tmp_path)
    out = tmp_path / "emb"
    code, err = tbpr(["embed", str(data), "--run", str(tiny_checkpoint("global")), "--out", str(out)])
    clear_error(code, err, *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["src [bold]x[/] [/]y", "src\nline", "src :smile: [red]"])
def test_prepare_prints_paths_literally(name: str, write_source: Callable[..., Path], tmp_path: Path, home: Path, tbpr_io: TbprIO, make_png: Callable[..., bytes]) -> None:  # fmt: skip
    records = [
        {"id": pid, "file_path": f"p{pid}/{view}.png", "captions": [f"person {pid} [red]{view}[/]"],
         "split": split}
        for pid, split in ((1, "train"), (2, "val"), (3, "test")) for view in range(2)
    ]  # fmt: skip
    source = write_source(tmp_path / name, records, {r["file_path"]: make_png(r["id"]) for r in records})
    out = tmp_path / f"out {name}"
    for done in ("prepared", "up to date"):  # the first run writes, the second finds DATA up to date
        code, stdout, err = tbpr_io(["prepare", str(source), "--format", "cuhk-pedes", "--out", str(out)])
        assert code == 0 and "Traceback" not in err, err
        assert f"{done}" in stdout and f" {out} " in stdout, stdout
    code, stdout, err = tbpr_io(["prepare", str(source), "--format", "cuhk-pedes"])  # into TBPR_HOME
    assert code == 0 and "Traceback" not in err and str(home) in stdout, err


def test_errors_and_search_print_user_text_literally(
    tiny_emb: Callable[[str], Path], tmp_path: Path, home: Path, tbpr: Tbpr, tbpr_io: TbprIO
) -> None:
    missing = tmp_path / MARKUP
    code, err = tbpr(["train", str(missing), "--variant", "global"])
    clear_error(code, err, "[bold]b[/] [/] :smile:")
    code, stdout, err = tbpr_io(
        ["search", str(tiny_emb("global")), MARKUP, "--sheet", str(tmp_path / "s.png")]
    )
    assert code == 0, err
    assert MARKUP in " ".join(stdout.split()), stdout
