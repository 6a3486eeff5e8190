# Two commands do all set-up on a fresh machine: `make run` (the whole pipeline on synthetic data)
# and `make test`. Both create or update the virtual environment at .venv in the checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tbpr-installed
# Extra pip arguments for torch only, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run test lint typecheck unit browser bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# keep a torch 2.13.0 that is already there (a GPU user's CUDA build); else the CPU wheel
	@$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
		|| $(BIN)/pip install -q "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/tbpr run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo  # the layer contracts in pyproject.toml

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser test of `tbpr serve` drives Debian's chromium and chromedriver: installed here when they
# are missing and make runs as root with apt-get; otherwise that test is skipped (it fails under CI=true).
browser:
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "chromium/chromedriver missing (apt-get install chromium chromium-driver): the browser test is skipped"; \
		fi; \
	fi

unit: $(STAMP) browser
	$(BIN)/pytest $(ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare_throughput.py

clean:
	rm -rf .tbpr .pytest_cache .mypy_cache .ruff_cache
