"""One allocated step: A_i = Δ_i·ḡ_i and the numbers derived from it, built in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layout import Layout, shares, sign_counts
from ..protocol import Evaluation
from .quadrature import PathIntegral


@dataclass
class StepResult:
    """What one allocated step produced (the per-parameter LCA is float64, length K)."""

    step: int
    loss_before: float
    loss_after: float
    lca: np.ndarray
    residual: float
    drift: float
    panels: int
    converged: bool
    gradient_passes: int
    layer_lca: np.ndarray
    layer_counts: np.ndarray  # (n_layers, 3): parameters that helped / hurt / were zero
    class_lca: np.ndarray | None = None
    val_residual: float | None = None
    val_layer_lca: np.ndarray | None = None
    #: with ``eval_subset``: the standard error of each layer's LCA as an estimate of the
    #: full set's (from the spread of the subset's random groups)
    layer_lca_stderr: np.ndarray | None = None
    #: per split, the acceptance rule's estimate of the per-layer allocations' error,
    #: summed over layers (None where it has none: the trapezoid's first estimate)
    layer_change: Mapping[str, float | None] | None = None

    @property
    def pct_helped(self) -> float:
        return shares(self.layer_counts)[0]


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
) -> StepResult:
    """The step's allocation from its path integral; converged when it met the acceptance
    rule (:func:`~lca_core.engine.quadrature.integrate`). On a subset the grouped
    gradients give standard errors."""
    lca = integral.grads["train"].allocation(delta)
    grouped = integral.class_grads["train"]
    stderr = None
    if subset is not None and grouped is not None:
        # summed as group_allocations already: (G, layers)
        stderr = layer_stderr(grouped.value(), subset)
        grouped = None  # random groups, not classes: nothing to store per class
    val = integral.grads.get("val")
    sums = integral.layer_sums  # the per-layer sums the acceptance rule computed, if any
    return StepResult(
        step=step,
        loss_before=start["train"].loss,
        loss_after=loss_after,
        lca=lca,
        residual=integral.residuals["train"],
        drift=drift,
        panels=integral.panels,
        converged=integral.accepted,
        gradient_passes=gradient_passes,
        layer_lca=sums["train"] if sums is not None else layout.reduce_by_layer(lca),
        layer_counts=sign_counts(lca, layout),
        class_lca=grouped.allocation(delta) if grouped is not None else None,
        val_residual=integral.residuals["val"] if val is not None else None,
        val_layer_lca=(
            (sums["val"] if sums is not None else layout.reduce_by_layer(val.allocation(delta)))
            if val is not None
            else None
        ),
        layer_lca_stderr=stderr,
        layer_change=dict(integral.layer_changes),
    )


def group_allocations(layout: Layout, delta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """How a subset's group gradients (G, K) enter its path integral: as their allocations
    by layer (G, layers), all its error bars need. The quadrature is linear, so their sums
    are the groups' per-layer LCA, kept G × layers instead of G × K. Row by row: Δ times
    all groups at once would be another G × K array."""
    return lambda groups: np.stack([layout.reduce_by_layer(row * delta) for row in groups])


def layer_stderr(group_layer_lca: np.ndarray, subset: Mapping[str, Any]) -> np.ndarray:
    """Standard error of each layer's LCA on a subset as an estimate of the full set's.

    The LCA is a mean over examples, so the subset's is a sample mean: with group parts
    P_g = w_g·a_g (w_g = n_g/n, Σ_g P_g = the layer's LCA), SE² = G/(G−1)·Σ_g (P_g − w_g·Ā)²
    times the finite-population correction 1 − n/N.
    """
    weights = np.asarray(subset["weights"], dtype=np.float64)[:, None]
    total = group_layer_lca.sum(axis=0)
    spread = ((group_layer_lca - weights * total) ** 2).sum(axis=0)
    groups = len(weights)
    fpc = 1.0 - subset["size"] / subset["of"]
    return np.sqrt(groups / (groups - 1) * spread * fpc)
