"""flax nnx: models that hold their parameters in mutable ``Variable`` objects.

``lca_jax`` takes such a model where it takes parameters: ``Tracker(loss_fn, model, data)``
with ``loss_fn(model, x, y)``, and ``with tracker.step(): optimizer.update(model, grads)``
around the in-place update, as in PyTorch. flax is imported only when a model is one of
its own (it is in ``sys.modules`` then).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax


def _nnx() -> Any:
    return sys.modules.get("flax.nnx")


def is_module(obj: Any) -> bool:
    """Whether ``obj`` is an nnx model (never imports flax)."""
    nnx = _nnx()
    return nnx is not None and isinstance(obj, nnx.Module)


def is_live_view(tree: Any) -> bool:
    """Whether a pytree holds nnx ``Variable`` objects (``nnx.state(model)``,
    ``nnx.split``): a view of the model that an optimizer update changes in place, so it
    cannot stand for the parameters *before* a step once the step is made."""
    nnx = _nnx()
    if nnx is None:
        return False
    variable = nnx.Variable
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, variable))
    return any(isinstance(leaf, variable) for leaf in leaves)


LIVE_VIEW = (
    "params_before is an nnx state (nnx.state / nnx.split), a live view of the model: the "
    "optimizer's in-place update has changed it too, so it no longer holds the parameters "
    "before the step. Give lca_jax.Tracker the model itself and wrap the update in "
    "`with tracker.step(): optimizer.update(model, grads)` (see docs/jax.md, flax nnx), or "
    "pass copies: jax.tree.map(jnp.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))."
)


class ModuleParameters:
    """An nnx model seen as ``loss_fn(params, x, y)`` over its ``nnx.Param`` state: each
    evaluation merges the parameters into a copy of the model in evaluation mode (dropout
    off, BatchNorm on its running statistics, which are those of the model when the tracker
    was made); the user's model is never changed."""

    def __init__(self, module: Any, loss_fn: Callable[[Any, Any, Any], Any]) -> None:
        nnx = _nnx()
        self.module = module
        graphdef, _, rest = nnx.split(module, nnx.Param, ...)

        def loss(params: Any, x: Any, y: Any) -> Any:
            model = nnx.merge(graphdef, params, rest)
            model.eval()
            return loss_fn(model, x, y)

        self.loss_fn = loss

    def params(self) -> Any:
        """The model's parameters now (a live view: flatten it at once)."""
        nnx = _nnx()
        return nnx.state(self.module, nnx.Param)
