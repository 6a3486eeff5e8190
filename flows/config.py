"""Run configurations: one pydantic model per flow, loaded from TOML with `--set a.b=c` overrides.

Presets live in `configs/` (`quick.toml` a few minutes, `full.toml` the long schedule). `main.toml` is
also the default: `PipelineConfig()` (the Prefect deployment's parameters, `load_config` without a
file) reads it, and a file that leaves out a top-level section gets main's (`main_sections`). It is
found beside the packages, in the checkout (`pip install -e .`, as the Makefile installs).
Every flow writes its config as `run_config.json` beside its outputs (`config.json` names a
checkpoint's model config only), and the pipeline flattens it into the MLflow params of its parent
run (`flatten`).
"""

from __future__ import annotations

import tomllib
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.core.device import Precision
from tasks.core.errors import TbprError
from tasks.core.files import write_text_atomic
from tasks.core.settings import deep_merge, flatten_params, parse_overrides, validation_summary
from tasks.data.prepare import Format
from tasks.embed.index import IndexKind
from tasks.score.plan import JOB_NAMES, PlanError, ScorePlan
from tasks.score.strategy import ScoreMode
from tasks.tracking.config import TrackingConfig
from tasks.train.config import TrainConfig, control_variants, registered_variants
from tbpr_models.registry import get_variant

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PROFILES = ("quick", "main", "full", "irra")
MAIN_CONFIG = CONFIG_DIR / "main.toml"  # the embedded default
RUN_CONFIG = "run_config.json"  # what every flow writes beside its outputs

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model here: frozen, and unknown keys are an error (a typo in a TOML file
    must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RunnerConfig(StrictModel):
    """Task runner: Prefect's thread pool, its process pool (tasks in `workers` processes of
    `threads_per_worker` compute threads each), or Dask (a local cluster, or a scheduler at `address`)."""

    kind: Literal["thread", "process", "dask"] = "thread"
    workers: int = Field(default=1, ge=1)  # thread pool size, or processes (process pool, local Dask)
    threads_per_worker: int = Field(default=1, ge=1)  # compute threads per process (process, local Dask)
    address: str | None = None  # Dask scheduler, e.g. tcp://10.0.0.5:8786 (kind = "dask")


class SynthSettings(StrictModel):
    identities: int = Field(default=1000, ge=2)
    seed: int = 0
    held_out: int | None = Field(default=None, ge=2)  # identities in each of val and test (default ~10%)
    test: int | None = Field(default=None, ge=2)  # identities in test instead (default: held_out)

    @property
    def tag(self) -> str:
        """Names its folders: `<identities>-<seed>`, plus `-h<held_out>` and `-t<test>` when set."""
        tag = f"{self.identities}-{self.seed}" + (f"-h{self.held_out}" if self.held_out else "")
        return tag + (f"-t{self.test}" if self.test else "")


class SourceSettings(StrictModel):
    """Where the data comes from: a dataset folder in `format`, or (no `source`) synthetic data."""

    source: Path | None = None
    format: Format = "cuhk-pedes"
    synth: SynthSettings = SynthSettings()


DEFAULT_TRAIN = TrainConfig(epochs=3, device="cpu", sampler="identity")


class TrainSettings(StrictModel):
    """Which variants to train and how: `config` for all of them, `per_variant` patches one of them
    (e.g. `[train.per_variant.hard_topk] model = {variant = {k = 8}}`), each once per seed in
    `seeds` (the warehouse reports the mean over seeds with intervals)."""

    variants: list[str] = Field(default_factory=registered_variants)  # every registered variant
    seeds: list[int] | None = Field(default=None, min_length=1)  # None: [config.seed]
    config: TrainConfig = DEFAULT_TRAIN
    per_variant: dict[str, dict[str, Any]] = {}
    # also train the positive controls (`control_top_half`: `global` seeing the top half of each image),
    # which the leaderboard must find significantly worse than `global`
    control: bool = False
    # a learning rate chosen on val per variant: its first seed trains once per lr, the lr of the best
    # smoothed val R1 trains the other seeds (the other lrs' runs stay in MLflow, never scored)
    lr_grid: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        default=None, min_length=1
    )
    # Fine-tune the encoders once with this config (e.g. `global` with the top stages trainable on the
    # feature cache); every variant x seed then starts from its encoders (`init_from`), so with
    # `config.features = "cached"` and frozen encoders all heads train on one shared cache.
    backbone: TrainConfig | None = None

    @field_validator("variants")
    @classmethod
    def _registered(cls, variants: list[str]) -> list[str]:
        known = registered_variants() + control_variants()
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; registered: {known}")
        return variants

    @model_validator(mode="after")
    def _patches(self) -> TrainSettings:
        """Each `per_variant` patch names a registered variant and makes a valid config of it."""
        known = registered_variants() + control_variants()
        for variant in self.per_variant:
            if variant not in known:
                raise ValueError(f"per_variant.{variant}: unknown variant; registered: {known}")
            try:
                self.for_variant(variant)
            except ValidationError as exc:
                raise ValueError(f"per_variant.{variant}: {validation_summary(exc)}") from None
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    def for_variant(self, variant: str, seed: int | None = None) -> TrainConfig:
        """The TrainConfig of one variant (and seed): `config` with `variant` set, its patch merged in;
        the A/A control (`control_aa`) trains the seed plus its head's `seed_offset`."""
        data = deep_merge(self.config.model_dump(mode="json"), self.per_variant.get(variant, {}))
        chosen = (self.seed_list()[0] if seed is None else seed) + seed_offset(variant)
        return TrainConfig.model_validate({**data, "variant": variant, "seed": chosen})

    def seed_list(self) -> list[int]:
        """The seeds each variant trains with: `seeds`, or the one seed of `config`."""
        return self.seeds if self.seeds is not None else [self.config.seed]

    def models(self) -> list[tuple[str, str, int]]:
        """(name, variant, seed) of every model to train; the name is the variant alone with one seed,
        `<variant>-seed<s>` with several (it names the output folders)."""
        seeds = self.seed_list()
        variants = self.variants + [c for c in control_variants() if self.control and c not in self.variants]
        return [
            (variant if len(seeds) == 1 else f"{variant}-seed{seed}", variant, seed)
            for variant in variants
            for seed in seeds
        ]


def seed_offset(variant: str) -> int:
    """What variant's head adds to each training seed: `control_aa`'s SEED_OFFSET, 0 for every other."""
    return int(getattr(get_variant(variant).head_cls, "seed_offset", 0))


class EmbedSettings(StrictModel):
    device: str = Field(default="cpu", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # auto, cpu, cuda, cuda:N
    batch_size: int = Field(default=128, ge=1)
    precision: Precision = "fp32"
    # the local features (pairwise heads' regions and words) as float16, or as 8-bit codes with a range
    # per region and word: half their size, scores within 8-bit rounding (README "Time and storage")
    local_dtype: Literal["float16", "uint8"] = "float16"
    shards: int = Field(default=1, ge=1)  # > 1: the gallery embedded in shards on Dask workers
    scheduler: str | None = None  # with shards: a Dask scheduler address (default: a local cluster)


class ScoreJob(StrictModel):
    """One scoring job of a pipeline or `score-queries` run, in TOML; validated by building its
    `ScorePlan` (tasks/score/plan.py: every rule on combinations of options lives there)."""

    mode: ScoreMode = "exhaustive"
    top_k: int = Field(default=50, ge=1)
    index: IndexKind = "flat"
    adaptive: bool = False  # pruned: a per-query k <= top_k (re-ranking stops when the top 10 are settled)
    shards: int = Field(default=1, ge=1)  # > 1: the gallery scored in shards on Dask workers, merged exactly
    scheduler: str | None = None  # with shards: a Dask scheduler address (default: a local cluster)
    # pruned, a cascade: the same seed's model of this variant (e.g. "global") proposes the top_k
    # candidates from its FAISS index, each model's pair scorer re-ranks them (`score --candidates-from`)
    candidates: str | None = None
    # pruned, an external re-ranker: a local cross-encoder folder (BLIP ITM) re-ranks the top_k of each
    # model's own index from the captions and DATA's images (`score --reranker`)
    reranker: Path | None = None
    # in a pipeline, only the models of these variants run this job (default: every model)
    variants: list[str] | None = None

    @model_validator(mode="after")
    def _plan(self) -> ScoreJob:
        """The job makes a valid plan (a cascade's EMB stands in by its variant's name); the variants it
        names are registered (a model whose candidates variant was not trained skips it)."""
        try:
            self.plan(Path(self.candidates) if self.candidates else None)
        except PlanError as exc:
            raise ValueError(str(exc)) from None
        known = registered_variants() + control_variants()
        unknown = sorted(
            {*(self.variants or []), *([self.candidates] if self.candidates else [])} - set(known)
        )
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown} in a job; registered: {known}")
        return self

    def plan(self, candidates_emb: Path | None = None) -> ScorePlan:
        """The scoring plan of this job, a cascade's candidates from `candidates_emb`."""
        return ScorePlan.from_options(
            self.mode, candidates_from=candidates_emb, names=JOB_NAMES, **self.plan_options()
        )

    def plan_options(self) -> dict[str, Any]:
        """The plan's options this job sets besides its mode and candidates (`tasks.score.run.score`)."""
        return {"top_k": self.top_k, "index": self.index, "adaptive": self.adaptive, "shards": self.shards,
                "scheduler": self.scheduler, "reranker": self.reranker}  # fmt: skip

    @property
    def name(self) -> str:
        """Folder name of this job's outputs, e.g. `pruned-k50-flat`, `pruned-k20-flat-from-global`."""
        name = self.mode if self.mode == "exhaustive" else f"pruned-k{self.top_k}-{self.index}"
        name += "-adaptive" if self.adaptive else ""
        name += f"-from-{self.candidates}" if self.candidates else ""
        name += f"-reranked-{self.reranker.name}" if self.reranker else ""
        return name if self.shards == 1 else f"{name}-shards{self.shards}"


DEFAULT_JOBS = [ScoreJob(), ScoreJob(mode="pruned", top_k=20)]


class PlotSettings(StrictModel):
    attention_queries: int = Field(default=3, ge=0)  # heat maps for this many test queries per variant


class OpenSetSettings(StrictModel):
    """Open-set figures of every model: a threshold set on val for `false_alarm`, measured on test."""

    enabled: bool = True
    false_alarm: float = Field(default=0.05, gt=0, lt=1)


class PrepareRunConfig(StrictModel):
    """Flow `prepare-dataset`: synthesise (no source) or read `data.source`, write Parquet to `out`."""

    data: SourceSettings = SourceSettings()
    out: Path


class TrainRunConfig(StrictModel):
    """Flow `train-variants`: one training task per variant over prepared `data`."""

    data: Path
    train: TrainSettings = TrainSettings()
    tracking: TrackingConfig = TrackingConfig()
    runner: RunnerConfig = RunnerConfig()
    out: Path | None = None  # checkpoints under out/<variant>; default $TBPR_HOME/runs/train/<run id>
    parent_run_id: str | None = None  # MLflow parent run (set by the pipeline)
    fail_on_error: bool = True  # False: return the failures instead of failing (the pipeline goes on)


class EmbedRunConfig(StrictModel):
    """Flow `embed-gallery`: features + FAISS index of the test split for one trained model."""

    data: Path
    model: str  # an MLflow run id, `models:/tbpr-<variant>@champion`, or a checkpoint folder
    out: Path
    embed: EmbedSettings = EmbedSettings()
    indexes: list[IndexKind] = ["flat", "hnsw", "ivf"]
    tracking: TrackingConfig = TrackingConfig()


class GallerySettings(StrictModel):
    """An image folder kept searchable: the pipeline re-embeds it into `emb` (incrementally, with the best
    registered champion unless `model` names one) when a champion changed during its run."""

    folder: Path  # the image folder (nested jpg/png/webp/bmp files)
    emb: Path  # its EMB folder (`tbpr search`, `tbpr serve`); not inside `folder`
    model: str | None = None  # a run id, models:/... or checkpoint folder; None: the best champion


class GalleryRunConfig(StrictModel):
    """Flow `refresh-gallery`: re-embed `folder` into `emb` incrementally (only added or changed files
    are encoded; another model re-embeds everything)."""

    folder: Path
    emb: Path
    model: str | None = None  # None: the registered champion of best val R1
    embed: EmbedSettings = EmbedSettings()
    indexes: list[IndexKind] = ["flat", "hnsw", "ivf"]
    tracking: TrackingConfig = TrackingConfig()


class ScoreRunConfig(StrictModel):
    """Flow `score-queries`: every job over one embedding folder, outputs under `out/<job.name>`."""

    emb: Path
    out: Path
    jobs: list[ScoreJob] = DEFAULT_JOBS
    tracking: TrackingConfig = TrackingConfig()
    runner: RunnerConfig = RunnerConfig()
    parent_run_id: str | None = None  # MLflow parent run of the scoring runs (set by the pipeline)
    # the EMB folder of each variant a cascade job names in `candidates` (set by the pipeline: the
    # same seed's models)
    candidates: dict[str, Path] = {}

    @model_validator(mode="after")
    def _candidates_known(self) -> ScoreRunConfig:
        missing = sorted({j.candidates for j in self.jobs if j.candidates} - set(self.candidates))
        if missing:
            raise ValueError(f"jobs take candidates from {missing}: give their EMB folders in `candidates`")
        return self


class PipelineConfig(StrictModel):
    """Flow `tbpr-pipeline`: data -> prepare -> train -> embed -> score -> warehouse -> leaderboard.

    Each top-level section left out takes configs/main.toml's (`_main_defaults`), so `PipelineConfig()`
    is the main job; the defaults below apply only where main.toml leaves a section out too."""

    name: str = "main"  # names the run folder $TBPR_HOME/runs/<time>-<name> and the parent run
    data: SourceSettings = SourceSettings()
    train: TrainSettings = TrainSettings()
    embed: EmbedSettings = EmbedSettings()
    jobs: list[ScoreJob] = DEFAULT_JOBS
    tracking: TrackingConfig = TrackingConfig()
    runner: RunnerConfig = RunnerConfig()
    plots: PlotSettings = PlotSettings()
    open_set: OpenSetSettings = OpenSetSettings()
    gallery: GallerySettings | None = None  # re-embedded when a champion changes; None: nothing is
    # once scored, pictured and in the warehouse: "best_val" keeps each variant's EMB of its best val
    # seed (the others are derived data: `tbpr embed DATA --run RUN_ID --out EMB` rebuilds one);
    # "all" keeps every one
    keep_emb: Literal["all", "best_val"] = "best_val"

    @model_validator(mode="before")
    @classmethod
    def _main_defaults(cls, data: Any) -> Any:
        """Fill the top-level sections `data` leaves out with main.toml's, whole (a section given is
        taken as written: `[data.synth] identities = 60` does not inherit main's `held_out`)."""
        return {**main_sections(), **data} if isinstance(data, dict) else data

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        """`name` goes into a folder name under $TBPR_HOME/runs: one plain path component."""
        if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
            raise ValueError(f"{name!r} is not a plain folder name (no '/', '\\', '..'); e.g. name=main")
        return name


def profile_path(profile: str) -> Path:
    if profile not in PROFILES:
        raise TbprError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return CONFIG_DIR / f"{profile}.toml"


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dictionary; a missing or malformed file is a TbprError naming it."""
    if not path.is_file():
        raise TbprError(f"config file {path} does not exist; pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TbprError(f"config file {path} is not valid TOML ({exc}); fix its syntax") from exc


@cache
def _main_toml(path: Path) -> dict[str, Any]:
    return read_toml(path)


def main_sections(path: Path = MAIN_CONFIG) -> dict[str, Any]:
    """The embedded default: configs/main.toml's top-level sections, read once per process (a copy)."""
    if not path.is_file():
        raise TbprError(
            f"the default config {path} is missing: tbpr reads its defaults from the checkout's configs/ "
            "(install it with `pip install -e .`, as `make venv` does)"
        )
    return deepcopy(_main_toml(path))


def load_config(model: type[M], path: Path | None = None, overrides: list[str] | None = None) -> M:
    """Validate `model` from a TOML file (or its defaults) plus overrides; errors name the bad key."""
    data = read_toml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise TbprError(
            f"invalid {model.__name__}: {validation_summary(exc)}; fix the config file or --set"
        ) from exc


def write_config(config: BaseModel, directory: Path) -> Path:
    """Write `run_config.json` into `directory` (created if needed), atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(directory / RUN_CONFIG, config.model_dump_json(indent=2) + "\n")


def flatten(config: BaseModel) -> dict[str, str]:
    """Dotted keys -> string values (`tasks.core.settings.flatten_params`): the parent run's params."""
    return flatten_params(config.model_dump(mode="json"))
