"""PyTorch backend for lca: ``TorchBackend``, the plain-loop ``Tracker`` and, when
Lightning is installed, ``LCACallback``. Imports torch (and nothing of other frameworks)."""

from __future__ import annotations

from typing import Any

from .backend import TorchBackend, layout_of
from .tracker import Tracker

__all__ = ["LCACallback", "TorchBackend", "Tracker", "layout_of"]


def __getattr__(name: str) -> Any:
    if name == "LCACallback":  # Lightning is optional: import it only when asked for
        from .lightning import LCACallback

        return LCACallback
    raise AttributeError(f"module 'lca_torch' has no attribute {name!r}")
