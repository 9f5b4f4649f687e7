"""TensorFlow / Keras 3 backend for lca: ``LCACallback`` for an unmodified ``model.fit``,
``Tracker`` for custom loops (GradientTape, Keras' stateless loop on JAX), one-call
``allocate``, and the backends ``TFBackend`` and ``KerasJaxBackend``. Imports keras (and
tensorflow or jax, whichever Keras runs on), no other framework."""

from __future__ import annotations

from typing import Any

from .callback import LCACallback
from .keras_common import layout_of
from .tracker import Tracker, allocate

__all__ = ["KerasJaxBackend", "LCACallback", "TFBackend", "Tracker", "allocate", "layout_of"]


def __getattr__(name: str) -> Any:
    # each imports its framework (tensorflow / jax): only when asked for
    if name == "TFBackend":
        from .backend import TFBackend

        return TFBackend
    if name == "KerasJaxBackend":
        from .keras_jax import KerasJaxBackend

        return KerasJaxBackend
    raise AttributeError(f"module 'lca_tensorflow' has no attribute {name!r}")
