"""The installed tbpr version (pyproject.toml is its one source), recorded in manifests and outputs."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tbpr")
except PackageNotFoundError:  # a checkout used without `pip install -e .`
    __version__ = "0.0.0+unknown"
