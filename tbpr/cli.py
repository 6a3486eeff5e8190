"""Entry point of the `tbpr` console script."""

from __future__ import annotations

import importlib
import os
import sys

from tasks.core.env import configure_logging, configure_offline
from tasks.core.errors import TbprError
from tbpr.app import app
from tbpr.options import damaged_input_errors, plain_console, styled

# Each module adds its commands to `app`; heavy libraries are imported inside the commands.
COMMAND_MODULES = ("synth", "prepare", "train", "embed", "scoring", "serve", "pipeline", "sql")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"tbpr.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tbpr.commands.{name}":
                raise


def main() -> None:
    configure_offline()
    configure_logging()
    _register_commands()
    debug = os.environ.get("TBPR_DEBUG", "") not in ("", "0")
    try:
        app(standalone_mode=True)
    except TbprError as exc:
        if debug:
            raise
        plain_console(stderr=True).print(styled("error:", "bold red", f" {exc}"))
        sys.exit(exc.exit_code)
    except damaged_input_errors() as exc:
        if debug:
            raise
        # a file the command reads or writes is missing, damaged or not writable: bad input, not a bug
        plain_console(stderr=True).print(
            styled(
                "error:",
                "bold red",
                f" {describe(exc)}; check the paths given, re-create damaged outputs with the command "
                "that wrote them (TBPR_DEBUG=1 shows the traceback)",
            )
        )
        sys.exit(2)


def describe(exc: BaseException) -> str:
    """One line: what failed and on which file, when the exception names one."""
    filename = getattr(exc, "filename", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{text} ({filename})" if filename and str(filename) not in text else text


if __name__ == "__main__":
    main()
