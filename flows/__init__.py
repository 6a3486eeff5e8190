"""Prefect flows (`prepare`, `train`, `embed`, `score`, `pipeline`, `gallery`), their run configs (`config`), the
Prefect task adapter (`prefect_tasks`: library functions wrapped as tasks) and task runners
(`runners`). Flows only wire; the work is in `tasks`."""
