"""How accurate the allocation is: residual statistics, first order vs Simpson (Table S1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.summary import budget_used
from ..storage.run import Run
from ._source import DEFAULT_CHUNK, Result


@dataclass
class ResidualStats(Result):
    mean_abs: float
    rms: float
    max_abs: float
    quantiles: dict[str, float]  # of |r|
    sum: float
    budget_used: float  # |Σ r| / |ΔL|


@dataclass
class Accuracy(Result):
    rule: str
    residuals: ResidualStats
    converged_fraction: float
    panels: dict[int, int]  # sub-intervals used → number of steps
    first_order: ResidualStats | None  # needs the trajectory and the gradients


def residual_stats(residuals: np.ndarray, loss_change: float) -> ResidualStats:
    r = np.asarray(residuals, dtype=np.float64)
    a = np.abs(r)
    return ResidualStats(
        mean_abs=float(a.mean()) if r.size else float("nan"),
        rms=float(np.sqrt(np.mean(r**2))) if r.size else float("nan"),
        max_abs=float(a.max()) if r.size else float("nan"),
        quantiles={f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)} if r.size else {},
        sum=float(r.sum()),
        budget_used=budget_used(float(r.sum()), loss_change),
    )


def first_order_residuals(run: Run, chunk_steps: int = DEFAULT_CHUNK) -> np.ndarray:
    """r_t of the first-order rule, ΔL_t − Δ_t·∇L(θ_t), from the stored θ and gradients."""
    deltas = np.diff(run.losses)
    out = np.empty(run.steps)
    for s in range(0, run.steps, chunk_steps):
        e = min(s + chunk_steps, run.steps)
        theta = run.array("theta", slice(s, e + 1)).astype(np.float64)
        grads = run.array("grads", slice(s, e)).astype(np.float64)
        out[s:e] = deltas[s:e] - (np.diff(theta, axis=0) * grads).sum(axis=1)
    return out


def accuracy(run: Run) -> Accuracy:
    change = float(run.losses[-1] - run.losses[0]) if run.steps else 0.0
    panels, counts = np.unique(run.panels, return_counts=True)
    first = None
    if run.has("theta") and run.has("grads") and run.recorded_steps >= run.steps:
        first = residual_stats(first_order_residuals(run), change)
    return Accuracy(
        rule=str(run.config.get("rule", "simpson")),
        residuals=residual_stats(run.residuals, change),
        converged_fraction=float(run.converged.mean()) if run.steps else float("nan"),
        panels={int(p): int(c) for p, c in zip(panels, counts, strict=True)},
        first_order=first,
    )
