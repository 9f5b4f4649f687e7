"""Loss reconstruction: L(θ_0) + cumulative Σ LCA next to the true loss curve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..storage.run import Run
from ._source import Result


@dataclass
class Reconstruction(Result):
    losses: np.ndarray  # (T+1,) true L(θ_t)
    reconstructed: np.ndarray  # (T+1,) L(θ_0) + Σ_{s<t} Σ_i A[s,i]
    gap: np.ndarray  # losses − reconstructed = cumulative residual (+ drift)
    max_abs_gap: float


def loss_reconstruction(source: Run | tuple[np.ndarray, np.ndarray]) -> Reconstruction:
    """From a run, or from (losses (T+1,), per-step Σ LCA (T,))."""
    if isinstance(source, Run):
        losses, step_sums = source.losses, source.layer_lca.sum(axis=1)
    else:
        losses, step_sums = (np.asarray(a, dtype=np.float64) for a in source)
    if len(losses) != len(step_sums) + 1:
        raise ValueError(f"{len(losses)} losses do not match {len(step_sums)} steps (need T+1)")
    rebuilt = losses[0] + np.concatenate([[0.0], np.cumsum(step_sums)])
    gap = losses - rebuilt
    return Reconstruction(losses, rebuilt, gap, float(np.abs(gap).max()) if gap.size else 0.0)
