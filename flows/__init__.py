"""Prefect flows: wiring of the Prefect tasks in `tasks.prefect_tasks`, one run config per flow."""
