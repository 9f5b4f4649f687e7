"""One allocated step: A_i = Δ_i·ḡ_i and the numbers derived from it, built in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..arrays import kernels, to_host
from ..layout import Layout, shares, sign_counts
from ..protocol import Evaluation
from .parts import part_layer_sums, part_lca
from .quadrature import PathIntegral
from .uncertainty import group_covariance, group_stderr, with_total


@dataclass
class StepResult:
    """What one allocated step produced. The per-parameter arrays (``lca``, ``class_lca``,
    ``part_lca``) are host numpy copies made when read, from ``*_array``: where they were
    computed (numpy float64, or the backend's device arrays with ``arithmetic="device"``)."""

    step: int
    loss_before: float
    loss_after: float
    #: the per-parameter LCA, length K, where it was computed (read ``lca`` for numpy)
    lca_array: Any
    residual: float
    drift: float
    panels: int
    converged: bool
    gradient_passes: int
    layer_lca: np.ndarray
    layer_counts: np.ndarray  # (n_layers, 3): parameters that helped / hurt / were zero
    #: with ``per_class``: each class's per-parameter LCA, (classes, K), where computed
    class_lca_array: Any = None
    val_residual: float | None = None
    val_layer_lca: np.ndarray | None = None
    #: with ``eval_subset``: the standard error of each layer's LCA as an estimate of the
    #: full set's (from the spread of the subset's random groups)
    layer_lca_stderr: np.ndarray | None = None
    #: per split, the acceptance rule's estimate of the per-layer allocations' error,
    #: summed over layers (None where it has none: the trapezoid's first estimate)
    layer_change: Mapping[str, float | None] | None = None
    #: with ``optimizer=``: each part's LCA by layer, (parts, layers), rows summing to
    #: ``layer_lca`` (parts: :data:`~lca_core.engine.parts.PARTS`)
    part_layer_lca: np.ndarray | None = None
    #: the same for the validation split's loss
    val_part_layer_lca: np.ndarray | None = None
    #: with ``optimizer=`` and ``eval_subset``: each part's standard error, (parts, layers)
    part_layer_lca_stderr: np.ndarray | None = None
    #: with ``optimizer=`` and ``store_params``: per-parameter parts, (parts, K), where
    #: computed
    part_lca_array: Any = None
    #: with ``eval_subset``: the standard error of the step's Σ LCA (all layers)
    lca_stderr: float | None = None
    #: with ``resample="shared"``: each layer's covariance with the step before (they
    #: share the subset of the point between them), and that of the step's Σ LCA
    layer_lca_cov_prev: np.ndarray | None = None
    lca_cov_prev: float | None = None

    @property
    def pct_helped(self) -> float:
        return shares(self.layer_counts)[0]

    @cached_property
    def lca(self) -> np.ndarray:
        """The per-parameter LCA A_i = Δ_i·ḡ_i, length K, on the host (one copy, on the
        first read, from a device)."""
        return to_host(self.lca_array)

    @cached_property
    def class_lca(self) -> np.ndarray | None:
        """With ``per_class``: each class's per-parameter LCA, (classes, K), on the host."""
        return None if self.class_lca_array is None else to_host(self.class_lca_array)

    @cached_property
    def part_lca(self) -> np.ndarray | None:
        """With ``optimizer=`` and ``store_params``: the per-parameter parts, (parts, K)."""
        return None if self.part_lca_array is None else to_host(self.part_lca_array)


def step_result(
    step: int,
    layout: Layout,
    delta: np.ndarray,
    start: dict[str, Evaluation],
    integral: PathIntegral,
    loss_after: float,
    *,
    drift: float,
    gradient_passes: int,
    subset: Mapping[str, Any] | None = None,
    deltas: np.ndarray | None = None,
    keep_parts: bool = False,
    shared: SharedEnds | None = None,
) -> StepResult:
    """The step's allocation from its path integral; converged when it met the acceptance
    rule (:func:`~lca_core.engine.quadrature.integrate`). On a subset the grouped
    gradients give standard errors. ``deltas``: Δ split by the optimizer's parts
    (:func:`~lca_core.engine.parts.part_deltas`), whose LCA is split the same way
    (per parameter too with ``keep_parts``). ``shared``: a resampled step whose ends lie on
    two subsets (``resample="shared"``), whose errors it gives."""
    lca = integral.grads["train"].allocation(delta)
    grouped = integral.class_grads["train"]
    stderr = part_stderr = total_stderr = None
    errors: dict[str, Any] = {}
    if subset is not None and grouped is not None:
        if shared is not None:
            stderr, total_stderr, part_stderr = shared.stderr, shared.total, shared.parts
            errors = {"layer_lca_cov_prev": shared.cov[:-1], "lca_cov_prev": float(shared.cov[-1])}
        else:
            # summed as group_allocations already: (G, layers), or (G, parts, layers)
            groups = grouped.value()
            if deltas is not None:
                part_stderr = group_stderr(groups, subset)
                groups = groups.sum(axis=1)
            both = group_stderr(with_total(groups), subset)
            stderr, total_stderr = both[:-1], float(both[-1])
        grouped = None  # random groups, not classes: nothing to store per class
    val = integral.grads.get("val")
    sums = integral.layer_sums  # the per-layer sums the acceptance rule computed, if any
    layer_lca = sums["train"] if sums is not None else layout.reduce_by_layer(lca)
    val_layer_lca = None
    if val is not None:
        val_layer_lca = (
            sums["val"] if sums is not None else layout.reduce_by_layer(val.allocation(delta))
        )
    split: dict[str, Any] = {}
    if deltas is not None:
        gbar = integral.grads["train"].value()
        split["part_layer_lca"] = part_layer_sums(layout.reduce_by_layer, gbar, deltas, layer_lca)
        if val_layer_lca is not None:
            assert val is not None
            split["val_part_layer_lca"] = part_layer_sums(
                layout.reduce_by_layer, val.value(), deltas, val_layer_lca
            )
        split["part_layer_lca_stderr"] = part_stderr
        if keep_parts:
            split["part_lca_array"] = part_lca(lca, gbar, deltas)
    return StepResult(
        step=step,
        loss_before=start["train"].loss,
        loss_after=loss_after,
        lca_array=lca,
        residual=integral.residuals["train"],
        drift=drift,
        panels=integral.panels,
        converged=integral.accepted,
        gradient_passes=gradient_passes,
        layer_lca=layer_lca,
        layer_counts=sign_counts(lca, layout),
        class_lca_array=grouped.allocation(delta) if grouped is not None else None,
        val_residual=integral.residuals["val"] if val is not None else None,
        val_layer_lca=val_layer_lca,
        layer_lca_stderr=stderr,
        layer_change=dict(integral.layer_changes),
        lca_stderr=total_stderr,
        **errors,
        **split,
    )


@dataclass
class SharedEnds:
    """A shared-design step's errors (``resample="shared"``): its two ends lie on the
    independent subsets of θ_t and θ_{t+1}, so each layer's variance is the sum of the
    ends' (each end's group parts weigh ½ in the trapezoid), and the start shares its
    subset with the step before's end: their covariance. ``end`` (G, layers + 1) is kept
    for the next step's."""

    stderr: np.ndarray
    total: float
    parts: np.ndarray | None
    cov: np.ndarray
    end: np.ndarray

    @classmethod
    def of(
        cls, integral: PathIntegral, subset: Mapping[str, Any], before: np.ndarray | None
    ) -> SharedEnds:
        grouped = integral.class_grads["train"]
        assert grouped is not None and grouped.rule == "trapezoid" and grouped.n == 1
        start, end = grouped.g0 * 0.5, grouped.g1 * 0.5  # (G, layers) or (G, parts, layers)

        def stderr(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # ends on independent subsets
            return np.hypot(group_stderr(a, subset), group_stderr(b, subset))

        parts = None
        if start.ndim == 3:
            parts = stderr(start, end)
            start, end = start.sum(axis=1), end.sum(axis=1)
        start, end = with_total(start), with_total(end)
        se = stderr(start, end)
        cov = np.zeros(len(se)) if before is None else group_covariance(before, start, subset)
        return cls(se[:-1], float(se[-1]), parts, cov, end)


def group_allocations(layout: Layout, delta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """How a subset's group gradients (G, K) enter its path integral: as their allocations
    by layer (G, layers), all its error bars need. The quadrature is linear, so their sums
    are the groups' per-layer LCA, kept G × layers instead of G × K. Row by row: Δ times
    all groups at once would be another G × K array. With Δ split by parts (parts, K),
    each group's allocation by part and layer, (G, parts, layers)."""
    if delta.ndim == 2:
        deltas = kernels(delta).rows(delta)
        return lambda groups: np.stack(
            [
                np.stack([layout.reduce_by_layer(row * d) for d in deltas])
                for row in kernels(groups).rows(groups)
            ]
        )
    return lambda groups: np.stack(
        [layout.reduce_by_layer(row * delta) for row in kernels(groups).rows(groups)]
    )
