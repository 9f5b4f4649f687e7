"""TensorFlow / Keras 3 backend for lca: ``LCACallback`` for an unmodified ``model.fit``
and ``TFBackend``. Imports keras (and tensorflow for ``TFBackend``), no other framework."""

from __future__ import annotations

from typing import Any

from .callback import LCACallback
from .keras_common import layout_of

__all__ = ["LCACallback", "TFBackend", "layout_of"]


def __getattr__(name: str) -> Any:
    if name == "TFBackend":  # imports tensorflow: only when asked for
        from .backend import TFBackend

        return TFBackend
    raise AttributeError(f"module 'lca_tensorflow' has no attribute {name!r}")
