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

from lca_core import Allocation
from lca_core.contract import integration, resolve_options
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


def make_backend(model: keras.Model, loss_fn: Any, data: Any, opts: dict[str, Any]) -> Any:
    """The backend for the running Keras backend: TensorFlow's, or Keras-on-JAX's."""
    name = keras_backend()
    options: dict[str, Any] = {
        "val_data": opts["val_data"],
        "resident_bytes": opts["resident_bytes"],
    }
    if opts["batch_size"] is not None:
        options["batch_size"] = opts["batch_size"]
    if name == "jax":
        from .keras_jax import KerasJaxBackend

        return KerasJaxBackend(model, loss_fn, data, **options)
    from .backend import TFBackend

    return TFBackend(model, loss_fn, data, bn_policy=opts["bn_policy"], **options)


@integration(bn_policy="batch", resident_bytes=None)
class Tracker(CoreTracker):
    """LCA of each optimizer step of a Keras custom loop (``loss_fn`` defaults to the
    model's compiled loss; it may return each example's loss or their mean)."""

    def __init__(
        self,
        model: keras.Model,
        loss_fn: Any,
        data: Any,
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        opts = resolve_options(
            {**options, "store": store}, "lca_tensorflow.Tracker", type(self).framework_options
        )
        self._setup(make_backend(model, loss_fn, data, opts), opts)

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
    """LCA of one step ``before → after`` (lists of the trainable variables' values);
    ``lca`` is a list of float64 arrays in the same order and shapes."""
    tracker = Tracker(model, loss_fn, data, **options)
    result = allocate_step(tracker, before, after)
    return Allocation(
        list(tracker.backend.layout.split(result.lca).values()), result.residual, result
    )
