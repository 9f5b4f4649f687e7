"""A backend made of plain numpy callables: any parameterized model, and the core's test bed.

Two forms:

* ``FunctionBackend(loss_and_grad, theta0)`` with ``loss_and_grad(theta) -> (loss, grad)``
  (and optionally ``per_class(theta) -> (class_losses, class_grads)``, weighted parts that
  sum to the total);
* ``FunctionBackend(loss_and_grad, theta0, data=(x, y))`` with
  ``loss_and_grad(theta, x, y) -> (mean loss, grad)``: the backend splits the set by label
  for per-class LCA and evaluates an optional ``val_data`` for validation LCA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..arrays import check_arithmetic
from ..layout import Layout
from ..protocol import Evaluation, Snapshot
from .base import BackendBase
from .evaluation_data import array_sets

LossAndGrad = Callable[..., tuple[float, np.ndarray]]


class FunctionBackend(BackendBase):
    """Evaluates a user's ``loss_and_grad`` at flat float64 parameter vectors.

    Args:
        loss_and_grad: ``loss_and_grad(theta)`` or, with ``data``, ``loss_and_grad(theta,
            x, y)`` → (mean loss, gradient of length K).
        theta0: the starting parameters, flat or a mapping name → array (fixes the layout).
        layout: the parameters' names, shapes and layers (default: from ``theta0``).
        data: an evaluation set (inputs, targets) handed to ``loss_and_grad``.
        val_data: a validation set, evaluated the same way.
        per_class: ``per_class(theta)`` → weighted class losses (C,) and gradients (C, K).
        num_classes: the classes for per-class LCA (default: inferred from labels).
    """

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        return callable(model)

    def __init__(
        self,
        loss_and_grad: LossAndGrad,
        theta0: np.ndarray | Mapping[str, np.ndarray],
        *,
        layout: Layout | None = None,
        data: tuple[np.ndarray, np.ndarray] | None = None,
        val_data: tuple[np.ndarray, np.ndarray] | None = None,
        per_class: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        num_classes: int | None = None,
        arithmetic: str | None = None,
    ) -> None:
        # the user's function takes and returns numpy: the arithmetic stays on the host
        check_arithmetic(arithmetic or "auto", device=False, backend="FunctionBackend")
        if isinstance(theta0, Mapping):
            layout = layout or Layout.from_shapes({k: np.shape(v) for k, v in theta0.items()})
            theta0 = np.concatenate([np.ravel(v) for v in theta0.values()])
        theta = np.array(theta0, dtype=np.float64).ravel()
        self.layout = layout or Layout.from_shapes({"theta": theta.shape})
        self.layout.check_vector(theta, "theta0")
        self.params = theta
        self._fn = loss_and_grad
        self._per_class_fn = per_class
        self._has_data = data is not None
        if data is not None:
            sets = array_sets(data, val_data)
            self.hold_sets(sets, sets["train"][1], num_classes)
        elif per_class is not None:
            self.num_classes = num_classes

    def snapshot(self) -> Snapshot:
        return Snapshot(self.params.copy())

    def policy(self) -> dict[str, Any]:
        return {"kind": "function", "data": self._has_data, "arithmetic": "host"}

    def evaluate_split(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        return [self._evaluate_one(np.asarray(t, np.float64), split, per_class) for t in thetas]

    def _evaluate_one(self, theta: np.ndarray, split: str, per_class: bool) -> Evaluation:
        if not self._has_data:
            loss, grad = self._fn(theta)
            ev = Evaluation(float(loss), np.asarray(grad, dtype=np.float64))
            if per_class and self._per_class_fn is not None:
                cl, cg = self._per_class_fn(theta)
                ev.class_losses, ev.class_grads = np.asarray(cl, float), np.asarray(cg, float)
            return ev
        x, y = self.sets[split]
        if not per_class:
            loss, grad = self._fn(theta, x, y)
            return Evaluation(float(loss), np.asarray(grad, dtype=np.float64))
        # L = Σ_c (N_c/N)·L_c: the per-class passes add up to one pass over the set
        groups = self.num_groups
        assert groups is not None
        group_of = self.group_of(split)
        class_losses = np.zeros(groups)
        class_grads = np.zeros((groups, self.layout.size))
        for c in range(groups):
            mask = group_of == c
            if mask.any():
                lc, gc = self._fn(theta, x[mask], y[mask])
                w = mask.sum() / len(y)
                class_losses[c], class_grads[c] = w * lc, w * np.asarray(gc, np.float64)
        return Evaluation.from_groups(class_losses, class_grads, per_class=True)
