"""The installed version, read once from the package metadata (the one place it is defined:
pyproject.toml). Nothing in lca_core imports the package root for it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loss-change-allocation")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
