"""Entry point of the `tbpr` console script."""

from __future__ import annotations

import importlib
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from tasks.core.env import configure_offline
from tasks.core.errors import TbprError
from tbpr.app import app

# Each module adds its commands to `app`; heavy libraries are imported inside the commands.
COMMAND_MODULES = ("synth", "prepare", "train", "embed", "scoring", "pipeline", "sql")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"tbpr.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tbpr.commands.{name}":
                raise


def main() -> None:
    configure_offline()
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=False)]
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Prefect's API calls, one line each at INFO
    _register_commands()
    try:
        app(standalone_mode=True)
    except TbprError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
