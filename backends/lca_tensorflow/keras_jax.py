"""``LCACallback`` under ``KERAS_BACKEND=jax``: the model's stateless call as a JAX loss."""

from __future__ import annotations

from typing import Any

import keras
from lca_jax import JaxBackend

from lca_core import Snapshot

from .keras_common import layout_of, per_example_loss, trial


class KerasJaxBackend(JaxBackend):
    """A :class:`lca_jax.JaxBackend` whose parameters are a Keras model's trainable
    variables (read from the model at each snapshot).

    Args:
        model: a built Keras model under ``KERAS_BACKEND=jax`` with no non-trainable state.
        loss_fn: the loss (per example or mean); None takes the model's compiled loss.
        data: the evaluation set (inputs, targets).
        **options: :class:`lca_jax.JaxBackend`'s keywords (``val_data``, ``batch_size``, …).

    Raises:
        ValueError: a model with non-trainable variables (use KERAS_BACKEND=tensorflow).
    """

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        return isinstance(model, keras.Model) and keras.backend.backend() == "jax"

    def __init__(
        self, model: keras.Model, loss_fn: Any, data: tuple[Any, Any], **options: Any
    ) -> None:
        if model.non_trainable_variables:
            raise RuntimeError(
                "under KERAS_BACKEND=jax, LCACallback supports models without non-trainable "
                "state (BatchNorm moving statistics would be frozen into the compiled loss); "
                "use KERAS_BACKEND=tensorflow for this model"
            )
        loss = per_example_loss(loss_fn if loss_fn is not None else model.loss)

        def jax_loss(params: Any, x: Any, y: Any) -> Any:
            out, _ = model.stateless_call(params, [], x, training=False)
            return loss(y, out)

        self.model = model
        super().__init__(jax_loss, [v.value for v in model.trainable_variables], data, **options)
        self.layout = layout_of(model)
        self.check_trial(*trial(model, loss, self.sets))

    def snapshot(self) -> Snapshot:
        # during fit, Keras' JAX trainer keeps the state outside the variables; attach it
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        return Snapshot(self.vector([v.value for v in self.model.trainable_variables]))
