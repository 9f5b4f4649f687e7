"""``Tracker`` for Keras 3 custom training loops, and the one-call ``allocate``.

TensorFlow ``GradientTape`` loops change the variables in place::

    with tracker.step():
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

Keras' stateless loop under ``KERAS_BACKEND=jax`` produces new values instead::

    new_values, opt_vars = optimizer.stateless_apply(opt_vars, grads, values)
    tracker.update(values, new_values)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from lca_core import Allocation, Splitter
from lca_core.contract import integration
from lca_core.layout import flat_vector
from lca_core.tracker import Tracker as CoreTracker
from lca_core.tracker import allocate_step

SUPPORTED_KERAS_BACKENDS = ("tensorflow", "jax")


def keras_backend() -> str:
    """The running Keras backend, refused with advice when lca cannot serve it."""
    name = keras.backend.backend()
    if name not in SUPPORTED_KERAS_BACKENDS:
        raise RuntimeError(
            f"lca_tensorflow supports KERAS_BACKEND in {SUPPORTED_KERAS_BACKENDS}, not "
            f"{name!r}; with PyTorch, use lca_torch.Tracker on a torch model instead"
        )
    return name


def make_backend(model: keras.Model, loss_fn: Any, data: Any, **keywords: Any) -> Any:
    """The backend for the running Keras backend: TensorFlow's, or Keras-on-JAX's (whose
    evaluation has no BatchNorm policy to choose: it takes ``bn_policy`` from no one)."""
    name = keras_backend()
    if name == "jax":
        from .keras_jax import KerasJaxBackend

        keywords.pop("bn_policy", None)
        return KerasJaxBackend(model, loss_fn, data, **keywords)
    from .backend import TFBackend

    return TFBackend(model, loss_fn, data, **keywords)


@integration(bn_policy="batch", resident_bytes=None)
class Tracker(CoreTracker):
    """LCA of each optimizer step of a Keras custom loop.

    Args:
        model: the Keras model being trained (its variables are read, never changed).
        loss_fn: the loss (per example or mean); None takes the model's compiled loss.
        data: the fixed evaluation set (inputs, targets).
        store: the run directory to write (None keeps only the summary in memory).
        **options: the common options (docs/api.md) and ``bn_policy``, ``resident_bytes``.

    Raises:
        RuntimeError: a Keras backend other than TensorFlow or JAX.
        UnknownOptionError: an option no tracker takes.
    """

    def __init__(
        self,
        model: keras.Model,
        loss_fn: Any,
        data: Any,
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self._build((model, loss_fn, data), store, options)

    def make_backend(  # type: ignore[override]
        self, model: keras.Model, loss_fn: Any, data: Any, **keywords: Any
    ) -> Any:
        return make_backend(model, loss_fn, data, **keywords)

    def find_splitter(self, optimizer: Any) -> Splitter:
        """``optimizer=``: a Keras SGD, RMSprop, Adam or AdamW (or a registered one). In the
        stateless loop give ``tracker.update(values, new_values, opt_state=(opt_vars,
        new_opt_vars))``, the optimizer variables around ``stateless_apply``."""
        from .splitters import make_splitter

        return make_splitter(optimizer, self.backend.model.trainable_variables)

    def flatten(self, params: Any) -> np.ndarray:
        """θ from a model, or a list of its trainable variables' values in order."""
        if isinstance(params, keras.Model):
            params = params.trainable_variables
        if not isinstance(params, Sequence):
            raise TypeError("give parameters as a list of the trainable variables' values")
        return flat_vector(np.asarray(keras.ops.convert_to_numpy(v)) for v in params)


def allocate(
    model: keras.Model,
    loss_fn: Any,
    data: Any,
    before: Sequence[Any],
    after: Sequence[Any],
    **options: Any,
) -> Allocation:
    """LCA of one step ``before → after``.

    Args:
        model, loss_fn, data: as for :class:`Tracker`.
        before, after: the trainable variables' values before and after, in order.
        **options: the common options.

    Returns:
        An ``Allocation``: ``lca`` is a list of float64 arrays in the same order and
        shapes; ``residual`` is ΔL − Σ LCA; ``result`` the whole ``StepResult``.
    """
    tracker = Tracker(model, loss_fn, data, **options)
    result = allocate_step(tracker, before, after)
    return Allocation(
        list(tracker.backend.layout.split(result.lca).values()), result.residual, result
    )
