"""Standard errors of LCA estimated on subsets, for one step and for sums over steps.

A subset's loss is a mean over its examples, split into G random groups of equal size:
the spread of the groups' parts gives each allocation's sampling variance (a sample
mean's), and, for two allocations measured on the same subset, their covariance. How the
steps' estimates are correlated depends on how subsets are laid along the trajectory
(docs/concepts.md, "Resampled subsets"): a fixed subset's steps can be correlated up to
fully, a paired design's steps are independent, and in the shared design adjacent steps
share the subset of the point between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def group_covariance(a: np.ndarray, b: np.ndarray, subset: Mapping[str, Any]) -> np.ndarray:
    """Covariance of the totals Σ_g a_g and Σ_g b_g of two quantities measured on the same
    subset's groups (a, b: (G, ...) group parts, weights w_g = n_g/n):
    G/(G−1)·Σ_g (a_g − w_g·A)(b_g − w_g·B), times the finite-population correction 1 − n/N.
    With a = b, the variance."""
    weights = np.asarray(subset["weights"], dtype=np.float64)
    weights = weights.reshape(-1, *([1] * (a.ndim - 1)))
    da = a - weights * a.sum(axis=0)
    db = b - weights * b.sum(axis=0)
    groups = len(weights)
    fpc = 1.0 - subset["size"] / subset["of"]
    return groups / (groups - 1) * (da * db).sum(axis=0) * fpc


def group_stderr(parts: np.ndarray, subset: Mapping[str, Any]) -> np.ndarray:
    """Standard error of Σ_g parts_g as an estimate of the full set's value: the LCA is a
    mean over examples, so the subset's is a sample mean, with group parts P_g = w_g·a_g
    (w_g = n_g/n, Σ_g P_g = the layer's LCA)."""
    return np.sqrt(np.maximum(group_covariance(parts, parts, subset), 0.0))


def with_total(parts: np.ndarray) -> np.ndarray:
    """Group parts by layer (G, layers) with their sum over layers appended as a last
    column: one computation gives each layer's error bar and the step's total's."""
    return np.concatenate([parts, parts.sum(axis=-1, keepdims=True)], axis=-1)


#: how a run's subsets lie along its trajectory: one fixed subset, or resampled
DESIGNS = ("fixed", "shared", "paired")


def cumulative_stderr(
    stderr: np.ndarray, design: str, cov_prev: np.ndarray | None = None
) -> np.ndarray:
    """The standard error of every running sum Σ_{s ≤ t} over the steps (axis 0), for the
    design as in :func:`sum_stderr`: the bands of cumulative curves."""
    se = np.asarray(stderr, dtype=np.float64)
    if design == "fixed":
        return np.cumsum(se, axis=0)
    variance = np.cumsum(se**2, axis=0)
    if design == "shared":
        if cov_prev is None:
            raise ValueError("a shared design's sums need each step's covariance with the last")
        cov = np.asarray(cov_prev, dtype=np.float64).copy()
        cov[:1] = 0.0  # the first step's is with a step outside the sums
        variance = variance + 2 * np.cumsum(cov, axis=0)
    elif design != "paired":
        raise ValueError(f"unknown subset design {design!r}; one of {DESIGNS}")
    return np.sqrt(np.maximum(variance, 0.0))


def sum_stderr(stderr: np.ndarray, design: str, cov_prev: np.ndarray | None = None) -> np.ndarray:
    """Standard error of a sum over consecutive steps (axis 0) of estimates with per-step
    standard errors ``stderr``.

    * ``fixed``: one subset for every step; its errors can be correlated up to fully, so
      Σ se bounds the sum's (exact for fully correlated steps);
    * ``paired``: a fresh subset per step: independent, √Σ se²;
    * ``shared``: adjacent steps share the subset between them: √(Σ se² + 2 Σ cov), with
      ``cov_prev[t]`` the covariance of step t with step t − 1 (the first step's is not
      in the window and left out).
    """
    se = np.asarray(stderr, dtype=np.float64)
    if not len(se):
        return np.zeros(se.shape[1:])
    return cumulative_stderr(se, design, cov_prev)[-1]
