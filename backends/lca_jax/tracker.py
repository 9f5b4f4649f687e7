"""``Tracker`` for optax / flax loops, and the functional ``allocate``.

tracker = Tracker(loss_fn, params, (x, y), store="run")
tracker.start(params)                       # before the first step (it may donate params)
for batch in batches:
    new_params, opt_state = step(params, opt_state, batch)
    tracker.update(params, new_params)
    params = new_params
tracker.close()
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import jax

from lca_core import Allocation, Splitter, StepResult
from lca_core.contract import integration
from lca_core.tracker import Tracker as CoreTracker
from lca_core.tracker import allocate_step

from . import nnx
from .backend import JaxBackend, LossFn


def _deleted(tree: Any) -> bool:
    """True if any leaf's buffer was donated to (and deleted by) a jitted step."""
    return any(
        isinstance(leaf, jax.Array) and leaf.is_deleted()
        for leaf in jax.tree_util.tree_leaves(tree)
    )


class _Arrays:
    """Which arrays a pytree held, without keeping them alive (weak references)."""

    def __init__(self, tree: Any = None) -> None:
        leaves = jax.tree_util.tree_leaves(tree)
        arrays = all(isinstance(leaf, jax.Array) for leaf in leaves)
        self._refs = [weakref.ref(leaf) for leaf in leaves] if leaves and arrays else None

    def same(self, tree: Any) -> bool:
        """Whether ``tree`` holds exactly these arrays, in order (JAX arrays are immutable,
        so their values are the ones seen then)."""
        if self._refs is None:
            return False
        leaves = jax.tree_util.tree_leaves(tree)
        return len(leaves) == len(self._refs) and all(
            ref() is leaf for ref, leaf in zip(self._refs, leaves, strict=True)
        )


@integration(num_classes=None, max_vmap=None, devices=None, resident_bytes=None)
class Tracker(CoreTracker):
    """Allocates each step's loss change; parameters are passed in, never mutated.

    ``loss_fn(params, x, y)`` returns each example's loss or the batch mean (both give the
    same L(θ)). The parameters after each step are copied to the host at once, so a jitted
    step that donates its buffers is safe.

    Args:
        loss_fn: ``loss_fn(params, x, y)``, pure and jit-able.
        params: the starting parameters (a pytree; fixes the layout).
        data: the fixed evaluation set (inputs, targets).
        store: the run directory to write (None keeps only the summary in memory).
        **options: the common options (docs/api.md) and ``num_classes``, ``max_vmap``,
            ``devices``, ``resident_bytes``.

    Raises:
        UnknownOptionError: an option no tracker takes.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Any,
        data: tuple[Any, Any],
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self._build((loss_fn, params, data), store, options)
        self._last_arrays = _Arrays()

    def make_backend(  # type: ignore[override]
        self, loss_fn: LossFn, params: Any, data: tuple[Any, Any], **keywords: Any
    ) -> JaxBackend:
        return JaxBackend(loss_fn, params, data, **keywords)

    def flatten(self, params: Any) -> Any:
        return self.backend.vector(params)

    def start(self, params: Any = None) -> None:
        super().start(params)
        self._last_arrays = _Arrays(params)

    def find_splitter(self, optimizer: Any) -> Splitter:
        """``optimizer=``: a transformation of :mod:`lca_jax.optimizers`, or an
        ``nnx.Optimizer`` built with one."""
        from .optimizers import make_splitter

        return make_splitter(optimizer)

    def update(
        self, params_before: Any, params_after: Any, *, opt_state: Any = None
    ) -> StepResult | None:
        """Allocate the step params_before → params_after (``params_before`` may have been
        donated to the step: it is then not compared; nor when it holds the very arrays of
        the last ``params_after``, which cannot have changed since). With ``optimizer=``,
        ``opt_state=(state_before, state_after)``."""
        if nnx.is_live_view(params_before):
            raise TypeError(nnx.LIVE_VIEW)
        if _deleted(params_before):
            if not self._started:
                raise RuntimeError(
                    "params_before was donated to the jitted step and is gone; call "
                    "tracker.start(params) before the first step"
                )
            params_before = None
        elif self._started and self._last_arrays.same(params_before):
            params_before = None
        result = super().update(params_before, params_after, opt_state=opt_state)
        self._last_arrays = _Arrays(params_after)
        return result


def allocate(
    loss_fn: LossFn,
    params_before: Any,
    params_after: Any,
    data: tuple[Any, Any],
    **options: Any,
) -> Allocation:
    """LCA of one step, functionally. The compiled pass is cached by ``loss_fn`` and shapes.

    Args:
        loss_fn: ``loss_fn(params, x, y)``.
        params_before, params_after: the step's two points (pytrees of one structure).
        data: the evaluation set (inputs, targets).
        **options: the common options.

    Returns:
        An ``Allocation``: ``lca`` is a pytree shaped like the parameters; ``residual``
        is ΔL − Σ LCA; ``result`` the whole ``StepResult``.
    """
    tracker = Tracker(loss_fn, params_before, data, **options)
    result = allocate_step(tracker, params_before, params_after)
    layout = tracker.backend.layout
    leaves = [result.lca[layout.slice_of(p.name)].reshape(p.shape) for p in layout.params]
    treedef = jax.tree_util.tree_structure(params_before)
    return Allocation(jax.tree_util.tree_unflatten(treedef, leaves), result.residual, result)
