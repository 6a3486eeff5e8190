"""Train one variant on prepared DATA: the loop (data -> steps -> val -> checkpoint), then the epoch
selected on val R1 tested once.

`train_variant` is a plain function (the CLI and the Prefect task both call it) that runs `_Trainer`
with callbacks (`tasks.train.callbacks`): `MlflowRun` tracks the run, registers `tbpr-<variant>` and
offers it for `champion`; the loop itself knows nothing of MLflow. The loop: AdamW with linear warm-up
and cosine decay (pretrained encoders at a lower lr), bf16 autocast (or fp16 with a gradient scaler),
optional gradient accumulation and activation checkpointing, evaluation on the val split after each
epoch, checkpoints of what was trained; the selection rules are `tasks.tracking.selection`'s.

Under torchrun (`tasks.train.distributed`) the same function trains one model with several processes:
DistributedDataParallel averages the gradients, each process takes its share of every global batch,
and rank 0 alone evaluates, logs, writes checkpoints and registers the model.

Why this file is over ~400 lines: `_Trainer` and the helpers only it uses (`param_groups`, `lr_lambda`,
resume and output checks, SIGTERM as Ctrl-C, the feature-cache path, DDP wrapping) share its state;
issue 33 item 2 splits the loop from the run's lifecycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tasks.cache.features import FeatureCache, build_cache
from tasks.core.device import (
    autocast,
    check_training_precision,
    grad_scaler,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
)
from tasks.core.env import home
from tasks.core.errors import TbprError
from tasks.core.files import write_text_atomic
from tasks.core.outputs import check_out_folder, check_outside_home
from tasks.data.parts import part_boxes
from tasks.data.reader import PreparedData, load_prepared
from tasks.tracking.config import TrackingConfig
from tasks.tracking.models import open_checkpoint, resolve_checkpoint
from tasks.tracking.store import Tracker
from tasks.train.batches import (
    CachedBatches,
    CaptionImageDataset,
    IdentityBatchSampler,
    RandomBatchSampler,
    class_indices,
    epoch_loader,
)
from tasks.train.callbacks import EpochHook, MlflowRun, TrainCallback
from tasks.train.config import TrainConfig, model_config
from tasks.train.distributed import (
    Ranks,
    barrier,
    mean_over_processes,
    process_device,
    process_group,
    share,
)
from tasks.train.evaluate import (
    EvalSettings,
    encode_cached,
    encode_images,
    encode_texts,
    evaluate_cached,
    evaluate_split,
)
from tasks.train.grounding import Grounding, measure_grounding
from tasks.train.progress import EpochProgress
from tasks.train.result import PHASES, TrainResult
from tasks.train.state import (
    STOP_BUDGET,
    STOP_EPOCHS,
    STOP_PLATEAU,
    TRAIN_CONFIG,
    EpochRecord,
    TrainState,
    commit_epoch_dir,
    drop_optimizer_state,
    epoch_dir,
    last_complete_epoch,
    load_train_state,
    prune_epoch_dirs,
    save_train_state,
    seed_everything,
)
from tbpr_models import (
    Batch,
    ModelConfig,
    RetrievalModel,
    build_model,
    build_tokenizer,
    image_transform,
    save_checkpoint,
)
from tbpr_models.checkpoint import frozen_base, load_weights
from tbpr_models.encoders import ImageEncoder, TextEncoder
from tbpr_models.registry import get_variant
from tbpr_models.tokenizer import label_vocabulary
from tbpr_models.variant import VariantHead

log = logging.getLogger(__name__)

EpochCallback = Callable[[EpochRecord], None]


def check_train_output(out: Path, data: Path, init_from: str | None) -> None:
    """Refuse (TbprError, nothing written) an `output_dir` of the user's files, one overlapping DATA or the
    checkpoint it starts from, or one over TBPR_HOME's stores."""
    inputs = {"DATA folder": data, "init_from checkpoint": Path(init_from) if init_from else None}
    check_out_folder(out, command="train", marker=TRAIN_CONFIG, inputs=inputs, option="output_dir")
    check_outside_home(out, option="output_dir")


def check_no_earlier_epochs(out: Path) -> None:
    """A new run refuses an `output_dir` holding an earlier run's epochs: it would silently continue
    from them (continuing a run is what `--resume` does)."""
    if out.is_dir() and last_complete_epoch(out):
        raise TbprError(
            f"output_dir {out} holds the checkpoints of an earlier run (epoch_{last_complete_epoch(out):03d}/); "
            "pass --resume to continue that run, or choose a new or empty folder; nothing was changed"
        )


def param_groups(model: nn.Module, mc: ModelConfig, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices only; pretrained encoders at lr * pretrained_lr_scale."""
    pretrained: set[int] = set()
    for module in model.modules():
        is_pretrained_text = isinstance(module, TextEncoder) and mc.text.kind in ("minilm", "clip")
        is_pretrained_image = isinstance(module, ImageEncoder) and (
            mc.image.kind in ("hf_vision", "clip")
            or (mc.image.kind == "efficientnet_lite0" and mc.image.pretrained)
        )
        if is_pretrained_text or is_pretrained_image:
            pretrained |= {id(p) for p in module.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            groups.setdefault((id(param) in pretrained, param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "lr": config.lr * (config.pretrained_lr_scale if pre else 1.0),
            "weight_decay": config.weight_decay if decay else 0.0,
        }
        for (pre, decay), params in sorted(groups.items())
    ]


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train_variant(
    data: Path,
    config: TrainConfig,
    *,
    tracking: TrackingConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    parent_run_id: str | None = None,
    on_epoch_end: EpochCallback | None = None,
    promote: bool = True,
    callbacks: Sequence[TrainCallback] = (),
) -> TrainResult:
    """Train `config.variant` on DATA as one MLflow run (`MlflowRun`, a callback like any other);
    `resume` continues the latest unfinished run of the same config; `promote=False` registers the model
    without ever making it champion (an lr search's runs); `callbacks` see every epoch and the result.

    Started by torchrun with several processes, they train one model together (every process returns
    rank 0's result; only rank 0 touches MLflow and the callbacks)."""
    if config.output_dir is not None:
        check_train_output(Path(config.output_dir), Path(data), config.init_from)
    prepared = load_prepared(Path(data))
    with process_group(resolve_device(config.device)) as ranks:
        trainer = _Trainer(prepared, config, progress and ranks.main, ranks)
        run = MlflowRun(Tracker(tracking), resume, parent_run_id, promote) if ranks.main else None
        hooks: list[TrainCallback] = [*([run] if run else []), *callbacks]
        if on_epoch_end is not None:
            hooks.append(EpochHook(on_epoch_end))
        with terminate_as_interrupt():
            try:
                with trainer.timed("build"):
                    trainer.open(run)
                trainer.fit(hooks if ranks.main else [])
                result = trainer.finish(hooks if ranks.main else [])
            except BaseException as exc:
                if run is not None:
                    run.fail(exc)
                if isinstance(exc, OSError) and not isinstance(exc, TbprError):
                    raise TbprError(f"training could not write its outputs: {exc}") from exc
                raise
        if run is not None:
            run.end()
    return result


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: marked KILLED, resumable.
    Only in the main thread, where Python delivers signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def offline_trainer(data: Path, config: TrainConfig, *, progress: bool = False) -> _Trainer:
    """A trainer of `config` on DATA that tracks nothing (benchmarks, the feature cache): its
    `initial_model`, `new_optimizer`, `step_model`, `batches(epoch)` and `train_step` are the loop's own."""
    return _Trainer(load_prepared(Path(data)), config, progress, Ranks())


def prepare_feature_cache(data: Path, config: TrainConfig, *, progress: bool = True) -> Path:
    """Build (or find) the feature cache that training `config` on DATA reads; its folder."""
    if config.features != "cached":
        raise TbprError(
            f"{config.variant} trains with features = {config.features!r}: it reads no feature cache"
        )
    trainer = offline_trainer(data, config, progress=progress)
    trainer.initial_model()
    assert trainer.cache is not None
    return trainer.cache.path


class _Losses(nn.Module):
    """`model.losses(batch)` as a module's forward, the call DistributedDataParallel hooks into."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model.losses(batch)


class _Trainer:
    """The state of one training call; methods in the order `train_variant` calls them."""

    def __init__(
        self,
        prepared: PreparedData,
        config: TrainConfig,
        progress: bool,
        ranks: Ranks,
    ) -> None:
        self.data, self.progress = prepared, progress
        self.ranks = ranks
        rows = config.batch_size
        if config.sampler == "identity":  # P identities x K captions
            rows = config.batch_size // config.captions_per_identity * config.captions_per_identity
        if rows % ranks.world:
            raise TbprError(
                f"batches of {rows} captions (batch_size {config.batch_size}) do not split over "
                f"{ranks.world} processes; make them a multiple of --nproc_per_node"
            )
        train = prepared.splits["train"]
        self.person_ids, classes = class_indices(train.caption_pids)
        self.model_config = model_config(config, num_classes=len(self.person_ids))
        self.device = process_device(resolve_device(config.device), ranks)
        # `auto` resolved here, so the run's params and checkpoints record the precision that ran
        config = config.model_copy(update={"precision": resolve_precision(config.precision, self.device)})
        self.config = config
        check_training_precision(self.device, config.precision)
        self.tokenize = build_tokenizer(self.model_config.text)
        image = self.model_config.image
        self.classes = classes
        self.train_set = CaptionImageDataset(
            train, classes, self.tokenize, image_transform(image, train=True)
        )
        # a head that predicts words predicts the training captions' own (`ModelConfig.label_words`)
        self.label_words = torch.zeros(0, dtype=torch.long)
        if get_variant(config.variant).head_cls.predicts_words:
            self.label_words = label_vocabulary(self.train_set.input_ids, self.train_set.attention_mask)
            self.model_config = dataclasses.replace(self.model_config, label_words=len(self.label_words))
        self.cache: FeatureCache | None = None  # features = "cached": opened (or built) in `fit`
        self.cached_batches: CachedBatches | None = None
        self.eval_transform = image_transform(image)
        self.sampler = self._sampler(classes)
        self.scaler = grad_scaler(self.device, config.precision)
        self.state = TrainState(smooth=config.smooth)
        self.stop_reason = STOP_EPOCHS
        self.run_id = ""
        self.out = Path()
        self.base: tuple[set[str], dict[str, Any]] = (set(), {})
        self.phases = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to `phase`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - start

    def _sampler(self, classes: Any) -> RandomBatchSampler | IdentityBatchSampler:
        c = self.config
        if c.sampler == "identity":
            return IdentityBatchSampler(
                classes, c.batch_size // c.captions_per_identity, c.captions_per_identity, c.seed
            )
        return RandomBatchSampler(len(classes), c.batch_size, c.seed)

    def open(self, run: MlflowRun | None) -> None:
        """The run's id and output folder: from the MLflow run `run` opens (a new one, or the latest
        unfinished one of this config when resuming) on rank 0, shared with the other processes."""
        if run is not None:
            self.run_id, self.out = run.open(self)
        self.run_id, self.out = share((self.run_id, self.out), self.ranks)

    def check_new_output(self) -> None:
        """Before a new run starts: its `output_dir` holds no earlier run's epochs."""
        if self.config.output_dir is not None:
            check_no_earlier_epochs(Path(self.config.output_dir))

    def new_output(self, run_id: str) -> Path:
        """A new run's output folder (`output_dir`, else runs/train/<run id>), holding its config."""
        out = Path(self.config.output_dir or home().runs / "train" / run_id)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / TRAIN_CONFIG, self.config.model_dump_json(indent=1))
        return out

    def fit(self, callbacks: Sequence[TrainCallback] = ()) -> None:
        """Train from the last complete epoch to `epochs`, or until the time budget is spent."""
        c = self.config
        with self.timed("build"):
            model = self.initial_model()
        optimizer = self.new_optimizer(model)
        steps_per_epoch = math.ceil(len(self.sampler) / c.grad_accumulation)
        warmup = c.warmup_steps if c.warmup_steps is not None else round(c.warmup_epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(warmup, c.epochs * steps_per_epoch)
        )
        # what a checkpoint leaves out: the frozen base the config rebuilds (not after init_from: those
        # encoders come from another run, so the whole model is saved)
        self.base = frozen_base(model) if not c.init_from else (set(), {})
        done = last_complete_epoch(self.out)
        if done:
            last = epoch_dir(self.out, done)
            load_weights(model, last, self.device)
            self.state = load_train_state(last, optimizer, scheduler, self.device, self.scaler)
        step_model = self.step_model(model)
        for epoch in range(self.state.epoch + 1, c.epochs + 1):
            reason = self._stop_reason()
            if reason is not None:
                self.stop_reason = reason
                break
            record = share(self._epoch(model, step_model, optimizer, scheduler, epoch), self.ranks)
            if self.ranks.main:
                with self.timed("checkpoint"):
                    self._save(model, optimizer, scheduler, record)
                    for callback in callbacks:
                        callback.on_epoch_end(self, record)
            else:
                self._remember(record)

    def _stop_reason(self) -> str | None:
        """Why training stops before the next epoch (None: it goes on; after the last configured epoch
        `stop_reason` stays `epochs`). A plateau is read off the smoothed val
        curve, so it does not depend on the machine; a time budget does, and says so."""
        c, s = self.config, self.state
        if c.patience and s.plateaued(c.patience, c.min_delta):
            log.info(
                "smoothed val R1 has not improved for %d epochs (best: epoch %d); stopping",
                c.patience,
                s.best.epoch,
            )
            return STOP_PLATEAU
        if c.time_budget_minutes and s.train_seconds >= c.time_budget_minutes * 60:
            log.warning(
                "time budget of %.1f min spent after epoch %d of %d: this result depends on the "
                "machine's speed (stop_reason = budget)",
                c.time_budget_minutes,
                s.epoch,
                c.epochs,
            )
            return STOP_BUDGET
        return None

    def initial_model(self) -> RetrievalModel:
        """The seeded initial model on the device, from `init_from`'s encoders when set; with
        features = "cached", its feature cache opened (built when missing)."""
        seed_everything(self.config.seed, 0)
        model = build_model(self.model_config)
        if self.model_config.label_words:
            model.head.set_label_words(self.label_words)
        if self.config.init_from:
            self._init_backbone(model, self.config.init_from)
        model.set_activation_checkpointing(self.config.activation_checkpointing)
        if self.ranks.distributed and self.device.type == "cuda":
            # batch statistics over the global batch, as one process would see them (CUDA only)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[assignment]
        model = model.to(self.device)
        if self.config.features == "cached":
            if not self.ranks.main:
                barrier(self.ranks)  # rank 0 builds the cache, the others open it
            self._open_cache(model)
            if self.ranks.main:
                barrier(self.ranks)
        return model

    def _init_backbone(self, model: RetrievalModel, ref: str) -> None:
        """Start from the encoders of a trained checkpoint (e.g. `global` fine-tuned). Its projections
        and head stay behind: they are that variant's optimum, and a head started from them would be
        compared as a near-copy of it."""
        folder, _ = resolve_checkpoint(ref)
        source = open_checkpoint(folder)
        try:
            for part in ("image_encoder", "text_encoder"):
                getattr(model, part).load_state_dict(getattr(source, part).state_dict())
        except RuntimeError as exc:
            raise TbprError(
                f"init_from {ref}: its encoders do not fit this model's settings ({exc})"
            ) from exc
        log.info("encoders initialised from %s", folder)

    def _open_cache(self, model: RetrievalModel) -> None:
        self.cache = build_cache(
            self.data,
            model,
            self.tokenize,
            device=self.device,
            progress=self.progress,
            dtype=self.config.cache_dtype,
        )
        for name, split in self.data.splits.items():
            self.cache.splits[name].check(split, self.cache.path)
        self.cached_batches = CachedBatches(
            self.cache.splits["train"],
            self.data.splits["train"],
            self.classes,
            self.tokenize,
            self.cache.point,
        )

    def batches(self, epoch: int) -> Iterable[Batch]:
        c = self.config
        if self.cached_batches is not None:
            return self.cached_batches.epoch(self.sampler, epoch=epoch, seed=c.seed, ranks=self.ranks)
        return epoch_loader(
            self.train_set,
            self.sampler,
            epoch=epoch,
            seed=c.seed,
            num_workers=c.num_workers,
            ranks=self.ranks,
        )

    def _evaluate(self, model: RetrievalModel, split: str) -> dict[str, float]:
        if self.cache is not None:
            return evaluate_cached(
                model,
                self.data.splits[split],
                self.cache.splits[split],
                self.cache.point,
                self.tokenize,
                self._eval(),
            )
        return evaluate_split(
            model, self.data.splits[split], self.tokenize, self.eval_transform, self._eval()
        )

    def _grounding(self, model: RetrievalModel) -> Grounding | None:
        """Pointing accuracy on the test split, for heads with word-to-region attention on data whose
        source recorded part boxes (`tbpr synth`); None otherwise."""
        if type(model.head).word_region_attention is VariantHead.word_region_attention:
            return None
        boxes = part_boxes(self.data.path)
        if not boxes:
            return None
        split, settings = self.data.splits["test"], self._eval()
        model.eval()
        input_ids, attention_mask = self.tokenize(split.texts)
        if self.cache is not None:
            texts, images = encode_cached(
                model, self.cache.splits["test"], self.cache.point, input_ids, attention_mask, settings
            )
        else:
            images = encode_images(model, split, self.eval_transform, settings)
            texts = encode_texts(model, input_ids, attention_mask, settings)
        return measure_grounding(model, split, texts, images, self.tokenize, boxes)

    def _epoch(
        self,
        model: RetrievalModel,
        step_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epoch: int,
    ) -> EpochRecord:
        """One pass over the training batches (this process's share), then val (rank 0). The record
        holds the losses averaged over processes and the global samples/s; val is empty off rank 0."""
        c = self.config
        seed_everything(c.seed, epoch, self.ranks.rank)
        self.sampler.set_epoch(epoch)  # before its length: the identity sampler's varies by epoch
        loader = self.batches(epoch)
        steps = len(self.sampler)
        accumulate = c.grad_accumulation
        trainable = [p for p in model.parameters() if p.requires_grad]
        sums: dict[str, Tensor] = {}
        samples = 0
        model.train()
        reset_peak_memory(self.device)
        start = time.perf_counter()
        with EpochProgress(epoch, c.epochs, steps, enabled=self.progress) as bar:
            for index, batch in enumerate(loader):
                batch = batch.to(self.device)
                stepping = (index + 1) % accumulate == 0 or index + 1 == steps
                total, losses = self.train_step(step_model, batch, stepping=stepping, epoch=epoch)
                if stepping:
                    self._optimizer_step(optimizer, scheduler, trainable)
                for name, value in {"loss": total, **{f"loss_{k}": v for k, v in losses.items()}}.items():
                    sums[name] = sums.get(name, torch.zeros((), device=self.device)) + value.detach().float()
                samples += len(batch.person_ids) * self.ranks.world
                bar.advance(len(batch.person_ids) * self.ranks.world, total)
        train_seconds = time.perf_counter() - start
        self.phases["steps"] += train_seconds
        peak = peak_memory_mb(self.device)
        with self.timed("val"):
            val = self._evaluate(model, "val") if self.ranks.main else {}
        means = mean_over_processes({k: float(v) / steps for k, v in sums.items()}, self.ranks, self.device)
        seconds = time.perf_counter() - start
        return EpochRecord(
            epoch,
            means.pop("loss"),
            {k.removeprefix("loss_"): v for k, v in means.items()},
            val,
            samples / train_seconds,
            seconds,
            peak,
        )

    def train_step(
        self, step_model: nn.Module, batch: Batch, *, stepping: bool = True, epoch: int = 0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward and backward of one batch (on the device): the weighted total loss and the named
        losses. Under DDP a batch that does not step the optimizer accumulates its gradients locally."""
        c = self.config
        sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if isinstance(step_model, DistributedDataParallel) and not stepping:
            sync = step_model.no_sync()  # accumulate locally; average at the stepping batch
        with sync:
            with autocast(self.device, c.precision):
                losses = step_model(batch)
            total = torch.stack([self.model_config.weight(k) * v.float() for k, v in losses.items()]).sum()
            if not torch.isfinite(total):
                raise TbprError(
                    f"training loss is {total.item()} at epoch {epoch}; lower lr or use precision fp32"
                )
            self.scaler.scale(total / c.grad_accumulation).backward()
        return total, losses

    def new_optimizer(self, model: RetrievalModel) -> torch.optim.Optimizer:
        """AdamW over `param_groups`, fused (one kernel per step instead of ~10 passes per tensor: AdamW's
        CPU loop cost cross_fusion's 7.8M-parameter vocabulary head more than its forward pass; the same
        update in exact arithmetic)."""
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.AdamW(
            param_groups(model, self.model_config, self.config), lr=self.config.lr, fused=fused
        )

    def step_model(self, model: RetrievalModel) -> nn.Module:
        """The module a training step calls: the losses of `model`, wrapped for DistributedDataParallel
        (which averages the gradients) when several processes train."""
        losses = _Losses(model)
        if not self.ranks.distributed:
            return losses
        return DistributedDataParallel(
            losses,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # every built-in head uses all its trainable parameters in every step (checked by the
            # DDP test); a plugin head that does not gets DDP's error naming the unused parameters
            find_unused_parameters=False,
        )

    def _optimizer_step(
        self, optimizer: torch.optim.Optimizer, scheduler: Any, trainable: list[nn.Parameter]
    ) -> None:
        scaler = self.scaler
        if self.config.grad_clip_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, self.config.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self.state.step += 1

    def _remember(self, record: EpochRecord) -> None:
        """The state bookkeeping of `_save`, on the processes that write nothing."""
        s = self.state
        s.epoch, s.train_seconds = record.epoch, s.train_seconds + record.seconds
        s.history.append(record)

    def _save(
        self, model: RetrievalModel, optimizer: torch.optim.Optimizer, scheduler: Any, record: EpochRecord
    ) -> None:
        self._remember(record)
        s = self.state
        staging = self.out / f".epoch_{record.epoch:03d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        extra = {
            "dataset": self.data.dataset,
            "epoch": record.epoch,
            "val": record.val,
            "features": self.config.features,  # loads to the full model: embed/score run on raw inputs
            "feature_cache": self.cache.key if self.cache else None,
            "init_from": self.config.init_from,
        }
        save_checkpoint(model, staging, extra=extra, trained_only=bool(self.base[1]), base=self.base)
        save_train_state(staging, optimizer, scheduler, s, self.scaler)
        commit_epoch_dir(staging, epoch_dir(self.out, record.epoch))
        prune_epoch_dirs(self.out, keep={record.epoch, s.best.epoch})
        log.info(
            "epoch %d: loss %.4f, val R1 %.2f, %.1f samples/s",
            record.epoch,
            record.loss,
            record.val["R1"],
            record.samples_per_s,
        )

    def _eval(self) -> EvalSettings:
        c = self.config
        return EvalSettings(
            self.device,
            c.precision,
            c.eval_batch_size,
            c.eval_query_block,
            c.eval_gallery_block,
            c.num_workers,
            c.eval_top_k,
        )

    def finish(self, callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
        """Test the selected epoch (rank 0), drop the optimizer state, and hand the result through the
        callbacks (MLflow registers it); every process returns rank 0's result."""
        start = time.perf_counter()
        result = None
        if self.ranks.main:
            result = self._test_best()
            drop_optimizer_state(self.out)
            for callback in callbacks:
                result = callback.on_finish(self, result)
            phases = self.phases | {"finish": self.phases["finish"] + time.perf_counter() - start}
            result = dataclasses.replace(result, phases=phases)
            log.info("%s run %s: %s", result.variant, self.run_id, result.phase_summary())
            for callback in callbacks:
                callback.on_timed(self, result)
        return share(result, self.ranks)  # type: ignore[return-value]

    def _test_best(self) -> TrainResult:
        if not self.state.history:
            raise TbprError(f"run {self.run_id} completed no epoch; raise time_budget_minutes or epochs")
        best = self.state.best
        best_dir = epoch_dir(self.out, best.epoch)
        model = open_checkpoint(best_dir, device=self.device)
        test = self._evaluate(model, "test")
        grounding = self._grounding(model)
        if grounding is not None:
            test = {**test, **grounding.metrics()}
            log.info(
                "grounding: %.1f%% of %d part words point inside their part (chance %.1f%%)",
                grounding.accuracy,
                grounding.words,
                grounding.chance,
            )
        speeds = [r.samples_per_s for r in self.state.history]
        return TrainResult(
            self.run_id,
            self.config.variant,
            best.epoch,
            best.val,
            test,
            best_dir,
            sum(speeds) / len(speeds),
            "",
            False,
            len(self.state.history),
            self.state.train_seconds,
            self.stop_reason,
            tuple(r.val["R1"] for r in self.state.history),
        )
