"""PyTorch backend for lca: ``TorchBackend``, the plain-loop ``Tracker``, one-call
``allocate``, and the callbacks ``lca_torch.lightning.LCACallback`` (Lightning) and
``lca_torch.hf.LCACallback`` (Hugging Face ``Trainer``). Imports torch and nothing of
other frameworks; Lightning and transformers only when their callback is asked for."""

from __future__ import annotations

from typing import Any

from .backend import TorchBackend, layout_of
from .tracker import Tracker, allocate

__all__ = ["LCACallback", "TorchBackend", "Tracker", "allocate", "layout_of"]


def __getattr__(name: str) -> Any:
    if name == "LCACallback":  # Lightning's, as in 0.1; imported only when asked for
        from .lightning import LCACallback

        return LCACallback
    raise AttributeError(f"module 'lca_torch' has no attribute {name!r}")
