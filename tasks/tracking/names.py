"""The MLflow names tbpr writes and the warehouse SQL reads: the contract between them (README,
"The pipeline, tracking and the warehouse"). Writers and `tasks.report.warehouse` import these; change one here and both follow."""

from __future__ import annotations

# Tags of every run
TAG_VARIANT = "variant"
TAG_DATASET = "dataset"
TAG_STAGE = "stage"  # one of the STAGE_* values
TAG_GIT_SHA = "git_sha"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag of a child run
# Tags of training runs
TAG_CONFIG_HASH = "config_hash"  # identity of a run for --resume
TAG_CHECKPOINT_DIR = "checkpoint_dir"
TAG_BEST_EPOCH = "best_epoch"
TAG_STOP_REASON = "stop_reason"  # why training ended: epochs | plateau | budget
TAG_EPOCHS_RUN = "epochs_run"
# Tags of scoring runs
TAG_TRAIN_RUN = "train_run_id"
TAG_MODE = "mode"
TAG_CASCADE = "cascade"  # "true" when another model proposed the candidates
TAG_CANDIDATES = "candidates_variant"  # that model's variant

STAGE_TRAIN = "train"
STAGE_SCORE = "score"
STAGE_PIPELINE = "pipeline"

# Params of scoring runs (training runs log their flattened settings as `model.*` and `train.*`)
PARAM_MODE = "mode"
PARAM_TOP_K = "top_k"
PARAM_INDEX = "index"
PARAM_MODEL_REF = "model_ref"
# a cascade's first stage (`tbpr score --candidates-from EMB2`): EMB2's variant, folder, training run
PARAM_CANDIDATES = "candidates"
PARAM_CANDIDATES_EMB = "candidates_emb"
PARAM_CANDIDATES_RUN = "candidates_run_id"
# read by the warehouse for scoring runs logged by older tbpr versions or other tools
PARAM_OUT_DIR = "out_dir"
PARAM_MODEL_RUN = "model_run_id"
PARAM_TRAIN_SEED = "train.seed"  # a training run's seed (its flattened TrainConfig): pairs variants' seeds

# Metric keys: `<split>/<name>` per epoch (train, val) or once (test); scoring cost
METRICS = ("R1", "R5", "R10", "mAP", "mINP")  # retrieval metrics, percent
TRAIN_LOSS = "train/loss"
TRAIN_SPEED = "train/samples_per_s"
TRAIN_PEAK_MEMORY = "train/peak_memory_mb"  # per epoch: CUDA allocator peak, or peak RSS on the CPU
SCORE_SECONDS = "score/seconds"
SCORE_PAIRS = "score/pairs_scored"
SCORE_FLOPS = "score/flops_per_query"  # counted work per query (`tasks.score.cost`): the cost axis
SCORE_FLOPS_CUHK = "score/flops_per_query_cuhk_pedes"  # the same job against a 3,074-image gallery


def metric_key(split: str, name: str) -> str:
    """`metric_key("val", "R1")` -> `"val/R1"`; `metric_key("train", "loss_sdm")` -> `"train/loss_sdm"`."""
    return f"{split}/{name}"


# Model registry
CHECKPOINT_ARTIFACT = "checkpoint"  # artifact folder of a training run's selected checkpoint
CHAMPION = "champion"  # alias that moves only when val R1 improves
VERSION_VAL_R1 = "val_R1"  # model version tag: the val/R1 of the selected checkpoint
# model version tags: what that val R1 was measured on (DATA's content hash, the val split's queries);
# champions are compared only on the same DATA (`Tracker.promote_if_better`, `best_champion`)
VERSION_DATA = "data_hash"
VERSION_VAL_QUERIES = "val_queries"


def model_name(variant: str) -> str:
    """Registered model name of a variant: `tbpr-<variant>`."""
    return f"tbpr-{variant}"
