"""``Tracker`` for optax / flax loops, and the functional ``allocate``.

tracker = Tracker(loss_fn, params, (x, y), store="run")
tracker.start(params)                       # before the first step
for batch in batches:
    new_params, opt_state = step(params, opt_state, batch)   # may donate params
    tracker.update(params, new_params)
    params = new_params
tracker.close()
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from lca_core import Allocator, StepResult
from lca_core.protocol import Snapshot

from .backend import JaxBackend, LossFn, flatten


def _deleted(tree: Any) -> bool:
    """True if any leaf's buffer was donated to (and deleted by) a jitted step."""
    return any(
        isinstance(leaf, jax.Array) and leaf.is_deleted()
        for leaf in jax.tree_util.tree_leaves(tree)
    )


class Tracker:
    """Allocates each step's loss change; parameters are passed in, never mutated.

    The parameters after each step are copied to the host at once, so a jitted step that
    donates its argument buffers is safe. Keyword options go to :class:`lca_core.Allocator`
    or to :class:`JaxBackend` (``val_data``, ``batch_size``, ``num_classes``, ``max_vmap``,
    ``devices``).
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Any,
        data: tuple[Any, Any],
        store: str | os.PathLike[str] | None = None,
        *,
        rule: str = "simpson",
        tol: float = 1e-3,
        progress: bool = False,
        val_data: tuple[Any, Any] | None = None,
        batch_size: int | None = None,
        num_classes: int | None = None,
        max_vmap: int | None = None,
        devices: Any = None,
        **options: Any,
    ) -> None:
        backend_options: dict[str, Any] = {
            "val_data": val_data,
            "num_classes": num_classes,
            "devices": devices,
        }
        if batch_size is not None:
            backend_options["batch_size"] = batch_size
        if max_vmap is not None:
            backend_options["max_vmap"] = max_vmap
        self.backend = JaxBackend(loss_fn, params, data, **backend_options)
        if val_data is not None:
            options.setdefault("validation", True)
        self.allocator = Allocator(self.backend, store, rule=rule, tol=tol, **options)
        self.last: StepResult | None = None
        self._last_theta: np.ndarray | None = None
        self._bar = tqdm(desc="LCA", unit="step", disable=not progress, leave=False)

    def start(self, params: Any) -> None:
        """Evaluate the starting point; call before the first (possibly donating) step."""
        self._last_theta = flatten(params)
        self.allocator.start(Snapshot(self._last_theta))

    def update(self, params_before: Any, params_after: Any) -> StepResult:
        """Allocate the step params_before → params_after."""
        if self._last_theta is None:
            if _deleted(params_before):
                raise RuntimeError(
                    "params_before was donated to the jitted step and is gone; call "
                    "tracker.start(params) before the first step"
                )
            self.start(params_before)
        elif not _deleted(params_before) and not np.array_equal(
            flatten(params_before), self._last_theta
        ):
            raise RuntimeError(
                "params_before is not the params_after of the previous update: the "
                "parameters changed between tracked steps, so that change would be allocated "
                "to no one. Pass every update through tracker.update."
            )
        theta = flatten(params_after)  # a host copy: safe if the next step donates it
        self.last = self.allocator.advance(Snapshot(theta))
        self._last_theta = theta
        self._bar.set_postfix(
            residual=f"{self.last.residual:.1e}", helped=f"{self.last.pct_helped:.1f}%"
        )
        self._bar.update()
        return self.last

    @property
    def gradient_passes(self) -> int:
        return self.allocator.gradient_passes

    def summary(self) -> dict[str, Any]:
        return self.allocator.summary()

    def close(self) -> dict[str, Any]:
        self._bar.close()
        return self.allocator.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Allocation(NamedTuple):
    """Per-leaf LCA (a pytree shaped like the parameters, float64) and the step's figures."""

    lca: Any
    residual: float
    result: StepResult


def allocate(
    loss_fn: LossFn,
    params_before: Any,
    params_after: Any,
    data: tuple[Any, Any],
    *,
    rule: str = "simpson",
    tol: float = 1e-3,
    **options: Any,
) -> Allocation:
    """LCA of one step, functionally: ``allocate(loss_fn, p0, p1, (x, y)).lca`` is a pytree.

    The compiled gradient pass is cached by ``loss_fn`` and shapes, so repeated calls with
    the same loss and data do not recompile.
    """
    tracker = Tracker(loss_fn, params_before, data, rule=rule, tol=tol, **options)
    result = tracker.update(params_before, params_after)
    tracker.close()
    layout = tracker.backend.layout
    leaves = [result.lca[layout.slice_of(p.name)].reshape(p.shape) for p in layout.params]
    treedef = jax.tree_util.tree_structure(params_before)
    return Allocation(jax.tree_util.tree_unflatten(treedef, leaves), result.residual, result)
