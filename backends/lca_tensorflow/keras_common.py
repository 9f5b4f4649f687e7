"""Keras-only helpers shared by the TensorFlow backend and the Keras-on-JAX path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from lca_core import Layout, ParamSpec
from lca_core.backend_kit.evaluation_data import set_name
from lca_core.errors import EvaluationDataError, LCAError


def _short(path: str, model: keras.Model) -> str:
    """Variable path without the model's own name: "sequential/d1/kernel" → "d1/kernel"."""
    head, _, rest = path.partition("/")
    return rest if head == model.name and rest else path


def layout_of(model: keras.Model) -> Layout:
    """``model.trainable_variables`` grouped by layer (the variable's parent path); the
    neuron axis is the last axis (Keras kernels are (..., in, out))."""
    specs = []
    for v in model.trainable_variables:
        name = _short(v.path, model)
        layer = name.rsplit("/", 1)[0] if "/" in name else name
        shape = tuple(int(s) for s in v.shape)
        specs.append(ParamSpec(name, shape, str(v.dtype), layer, len(shape) - 1 if shape else None))
    return Layout(tuple(specs))


def per_example_loss(loss: Any) -> Callable[[Any, Any], Any]:
    """A loss of each example from a Keras loss (name, function or ``Loss`` object)."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        config = {**loss.get_config(), "reduction": "none"}
        return type(loss).from_config(config)
    if callable(loss):
        return loss
    raise TypeError(
        f"cannot use {loss!r} as a loss: pass loss_fn= (a keras loss or a callable "
        "loss(y_true, y_pred) returning each example's loss), or compile the model with one"
    )


def trial(
    model: keras.Model, loss: Callable[[Any, Any], Any], sets: dict[str, tuple[Any, Any]]
) -> tuple[int | None, dict[str, Any]]:
    """One inference call and loss on two examples of each set, when the backend is made:
    data that does not fit the model is named now. Returns the output width (classes) and
    the labels to check against it."""
    width, labels = None, {}
    for split, (x, y) in sets.items():
        try:
            out = model(x[:2], training=False)
            loss(y[:2], out)
        except LCAError:
            raise
        except Exception as exc:
            what = set_name(split)
            raise EvaluationDataError(
                f"the model and loss cannot take the {what} data (inputs {x.shape}, targets "
                f"{y.shape}): {type(exc).__name__}: {exc}. Give inputs and targets shaped as "
                "in training."
            ) from exc
        if len(out.shape) == 2:
            width, labels[split] = int(out.shape[-1]), y
    return width, labels
