"""One allocated step: A_i = Δ_i·ḡ_i and the numbers derived from it, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import Layout, sign_counts
from .protocol import Evaluation
from .quadrature import PathIntegral
from .summary import shares


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
    tol: float,
    gradient_passes: int,
) -> StepResult:
    """The step's allocation from its path integral; converged when every split's
    residual is within ``tol``."""
    lca = delta * integral.grads["train"].value()
    class_sum = integral.class_grads["train"]
    val = integral.grads.get("val")
    return StepResult(
        step=step,
        loss_before=start["train"].loss,
        loss_after=loss_after,
        lca=lca,
        residual=integral.residuals["train"],
        drift=drift,
        panels=integral.panels,
        converged=max(abs(r) for r in integral.residuals.values()) <= tol,
        gradient_passes=gradient_passes,
        layer_lca=layout.reduce_by_layer(lca),
        layer_counts=sign_counts(lca, layout),
        class_lca=delta * class_sum.value() if class_sum is not None else None,
        val_residual=integral.residuals["val"] if val is not None else None,
        val_layer_lca=layout.reduce_by_layer(delta * val.value()) if val is not None else None,
    )
