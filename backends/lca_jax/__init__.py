"""JAX backend for lca: ``JaxBackend``, ``Tracker`` for optax / flax loops and the
functional ``allocate``. Imports jax only (optax and flax are the user's choice)."""

from __future__ import annotations

from lca_core import Allocation

from .backend import JaxBackend, full_pass, layout_of
from .tracker import Tracker, allocate

__all__ = ["Allocation", "JaxBackend", "Tracker", "allocate", "full_pass", "layout_of"]
