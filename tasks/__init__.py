"""The stage functions of tbpr, one package per stage in pipeline order, plumbing at the bottom.

`core` (errors, TBPR_HOME, atomic files, device, settings) ← `tracking` (MLflow) and `data` (synth,
prepare, the DATA reader) ← `train` ← `embed` (EMB, FAISS) ← `score` (exhaustive, pruned, search)
← `report` (warehouse, SQL, plots). A stage imports only the stages below it; `make test` checks it
(`lint-imports`, contracts in pyproject.toml). Prefect appears nowhere here: `flows/` wraps these.
"""
