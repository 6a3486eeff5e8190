"""Run configs: presets, TOML files, `--set` overrides, run_config.json and MLflow params."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from flows.config import (
    PipelineConfig,
    ScoreJob,
    TrainSettings,
    flatten,
    load_config,
    main_sections,
    profile_path,
    write_config,
)
from tasks.core.errors import TbprError
from tasks.tracking.config import TrackingConfig

MAIN_TOML = Path(__file__).resolve().parents[2] / "configs" / "main.toml"


def _leaves(table: Any, prefix: str = "") -> dict[str, Any]:
    """Every value of a parsed TOML table by dotted path (list items by index)."""
    if isinstance(table, dict):
        return {k: v for key, value in table.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    if isinstance(table, list) and any(isinstance(item, dict) for item in table):
        return {k: v for i, item in enumerate(table) for k, v in _leaves(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: table}


def test_the_embedded_default_is_configs_main_toml() -> None:
    written = _leaves(tomllib.loads(MAIN_TOML.read_text(encoding="utf-8")))
    default = _leaves(PipelineConfig().model_dump(mode="json"))
    assert len(written) > 20
    assert {key: default.get(key, "<missing>") for key in written} == written
    assert len(PipelineConfig().jobs) == len(tomllib.loads(MAIN_TOML.read_text())["jobs"])
    # what main.toml leaves out is the models' own defaults
    assert PipelineConfig().tracking == TrackingConfig() and PipelineConfig().gallery is None


def test_a_file_leaving_a_section_out_gets_main_toml_s_section_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[data.synth]\nidentities = 40\n')
    config = load_config(PipelineConfig, path)
    assert (config.name, config.data.synth.identities) == ("x", 40)
    assert config.data.synth.held_out is None  # a section given is taken as written
    assert config.train == PipelineConfig().train and config.jobs == PipelineConfig().jobs


def test_a_missing_or_broken_default_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TbprError, match=r"default config .*missing"):
        main_sections(tmp_path / "main.toml")
    (tmp_path / "main.toml").write_text("[train\n")
    with pytest.raises(TbprError, match=r"main\.toml is not valid TOML"):
        main_sections(tmp_path / "main.toml")


def test_quick_preset_is_smaller_and_still_trains_every_variant() -> None:
    quick, main = load_config(PipelineConfig, profile_path("quick")), PipelineConfig()
    assert quick.data.synth.identities < main.data.synth.identities
    assert quick.train.config.epochs <= main.train.config.epochs
    assert quick.train.variants == main.train.variants


def test_full_preset_is_longer() -> None:
    full = load_config(PipelineConfig, profile_path("full"))
    assert full.train.config.epochs > PipelineConfig().train.config.epochs
    assert set(PipelineConfig().train.variants) <= set(full.train.variants)
    assert full.data.synth.identities > PipelineConfig().data.synth.identities


def test_overrides_reach_nested_keys_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[train.config]\nepochs = 7\nbatch_size = 16\n')
    config = load_config(
        PipelineConfig, path, ["train.config.epochs=2", 'train.variants=["global"]', "runner.kind=dask"]
    )
    assert (config.name, config.train.config.epochs, config.train.config.batch_size) == ("x", 2, 16)
    assert config.train.variants == ["global"] and config.runner.kind == "dask"


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.config.epochz=2"],
        ["runner.kind=ray"],
        ["jobs=3"],
        ["novalue"],
        ["train.config.epochs=0"],
        ["train.seeds=[]"],
        ["train.seeds=[1,1]"],
    ],
)
def test_bad_settings_are_tbpr_errors(overrides: list[str]) -> None:
    with pytest.raises(TbprError):
        load_config(PipelineConfig, None, overrides)


def test_missing_or_broken_files_are_tbpr_errors(tmp_path: Path) -> None:
    with pytest.raises(TbprError, match="does not exist"):
        load_config(PipelineConfig, tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(TbprError, match="not valid TOML"):
        load_config(PipelineConfig, tmp_path / "bad.toml")
    with pytest.raises(TbprError, match="profile"):
        profile_path("medium")


def test_per_variant_patch_merges_into_one_variant_only() -> None:
    settings = TrainSettings(
        variants=["global", "hard_topk"],
        per_variant={"hard_topk": {"model": {"variant": {"k_words": 4}}, "lr": 0.5}},
    )
    topk, base = settings.for_variant("hard_topk"), settings.for_variant("global")
    assert (topk.variant, topk.model, topk.lr) == ("hard_topk", {"variant": {"k_words": 4}}, 0.5)
    assert (base.variant, base.model, base.lr) == ("global", {}, settings.config.lr)


def test_unknown_variants_and_model_fields_are_refused_when_loaded() -> None:
    with pytest.raises(TbprError, match="unknown variant"):
        load_config(PipelineConfig, None, ['train.variants=["global", "no_such_variant"]'])
    with pytest.raises(TbprError, match="k"):
        load_config(
            PipelineConfig, None, ['train.config.model={"variant": {"k": 4}}', 'train.variants=["hard_topk"]']
        )


def test_config_json_round_trips_and_flattens(tmp_path: Path) -> None:
    config = PipelineConfig(jobs=[ScoreJob(), ScoreJob(mode="pruned", top_k=5, index="hnsw")])
    path = write_config(config, tmp_path / "run")
    assert PipelineConfig.model_validate(json.loads(path.read_text())) == config
    flat = flatten(config)
    assert flat["jobs.1.top_k"] == "5" and flat["jobs.1.index"] == "hnsw"
    assert json.loads(flat["train.variants"]) == config.train.variants
    assert flat["train.config.epochs"] == str(config.train.config.epochs)
    assert all(isinstance(v, str) for v in flat.values())


def test_each_variant_trains_once_per_seed_and_one_seed_keeps_the_plain_names() -> None:
    one = TrainSettings(variants=["global", "cross_scan"])
    assert one.seed_list() == [0] and one.models() == [
        ("global", "global", 0),
        ("cross_scan", "cross_scan", 0),
    ]
    # without `seeds`, the train config's own seed is the one seed
    seven = load_config(PipelineConfig, None, ["train.config.seed=7", 'train.variants=["global"]']).train
    assert seven.models() == [("global", "global", 7)] and seven.for_variant("global").seed == 7
    three = TrainSettings(variants=["global"], seeds=[0, 1, 2])
    assert [name for name, _, _ in three.models()] == ["global-seed0", "global-seed1", "global-seed2"]
    assert [three.for_variant("global", seed).seed for _, _, seed in three.models()] == [0, 1, 2]
    assert PipelineConfig().train.seeds == [0, 1, 2]  # the main job: 3 seeds per variant
    assert load_config(PipelineConfig, profile_path("full")).train.seeds == [0, 1, 2, 3, 4]


def _sections(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every table of a config (the model's nested pydantic sections), as dotted paths; a list of tables
    (`[[jobs]]`) ends in "[]"."""
    found = [prefix] if prefix else []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        for candidate in [annotation, *get_args(annotation)]:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                is_list = getattr(annotation, "__origin__", None) is list
                found += _sections(candidate, f"{prefix}{name}[]." if is_list else f"{prefix}{name}.")
    return found


# the model settings are plain tables validated by the variant registry, not pydantic sections
MODEL_TABLES = ["train.config.model.", "train.config.model.image.", "train.config.model.text.", "train.config.model.variant."]  # fmt: skip


@pytest.mark.parametrize("section", ["", *_sections(PipelineConfig), *MODEL_TABLES])
def test_an_unknown_key_in_any_table_of_a_run_config_is_an_error(section: str, tmp_path: Path) -> None:
    """A setting that does nothing (a typo, a key of another version) must not pass silently: in every
    table of the run config, from --set and from a TOML file alike."""
    table = section.rstrip(".")
    if not table.endswith("[]"):
        key = f"{table}.no_such_setting".lstrip(".")
        with pytest.raises(TbprError, match="no_such_setting"):
            load_config(PipelineConfig, profile_path("quick"), [f"{key}=1"])
    header = (
        f"[[{table[:-2]}]]\nmode = 'exhaustive'\n"
        if table.endswith("[]")
        else f"[{table}]\n"
        if table
        else ""
    )
    config = tmp_path / "run.toml"
    config.write_text(header + "no_such_setting = 1\n")
    with pytest.raises(TbprError, match="no_such_setting"):
        load_config(PipelineConfig, config)


def test_cascade_jobs_are_pruned_and_take_candidates_from_a_trained_variant() -> None:
    main = PipelineConfig()
    cascade = next(job for job in main.jobs if job.candidates)
    assert cascade.name == "pruned-k20-flat-from-global"
    with pytest.raises(ValueError, match="pruned job of one process"):
        ScoreJob(mode="exhaustive", candidates="global")
    with pytest.raises(ValueError, match="unknown variant"):
        ScoreJob(mode="pruned", candidates="globl")
    # a candidates variant left untrained is no error: its cascades are skipped (`jobs_of`)
    load_config(PipelineConfig, profile_path("main"), ['train.variants=["cross_scan"]'])


def test_each_model_runs_its_jobs_with_the_same_seeds_candidates() -> None:
    from flows.pipeline import jobs_of

    main = PipelineConfig()
    embs = {name: Path(f"/emb/{name}") for name, _, _ in main.train.models()}
    cascade = next(job for job in main.jobs if job.candidates)
    jobs, sources = jobs_of(main, "cross_scan-seed1", "cross_scan", embs)
    assert cascade in jobs and sources["global"] == Path("/emb/global-seed1")
    assert cascade not in jobs_of(main, "global-seed1", "global", embs)[0]  # its own pruned job
    assert cascade not in jobs_of(main, "mixed-seed0", "mixed", embs)[0]  # not in the job's variants
    del embs["global-seed2"]  # failed to train: the cascades of seed 2 are skipped
    assert cascade not in jobs_of(main, "cross_scan-seed2", "cross_scan", embs)[0]
