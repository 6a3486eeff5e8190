#!/usr/bin/env bash
# The GPU check (README, "On a GPU"): training, embedding and scoring speed on one GPU, peak memory, and
# CUDA against the CPU on a small case; under 8 minutes. Never part of `make test`.
#   benchmarks/gpu_check.sh [--json OUT.json] [--batch 128] ...   (arguments go to gpu_check.py)
# EXTRA_SITE=DIR puts packages that the machine lacks (e.g. efficientnet-lite-pytorch) on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="${EXTRA_SITE:+$EXTRA_SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
