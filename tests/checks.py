"""Checks shared by the test suites: each compares against something the allocation did
not produce itself (the tolerance on every step, an independent oracle)."""

from __future__ import annotations

import numpy as np

from lca_core import Run


def assert_every_step_within_tol(run: Run, tol: float = 1e-3) -> None:
    """Every step — not only those that say they converged — explains its loss change
    (minus buffer drift) within ``tol``, from the stored losses and LCA, and says so."""
    assert run.steps > 0
    gap = np.diff(run.losses) - run.layer_lca.sum(1) - run.drift
    assert np.all(np.abs(gap) <= tol), f"steps over tol: {np.flatnonzero(np.abs(gap) > tol)}"
    assert run.converged.all()


def gauss_legendre_lca(
    grad: callable, theta0: np.ndarray, theta1: np.ndarray, nodes: int = 64
) -> np.ndarray:
    """Δ ⊙ ∫₀¹ ∇L(θ0 + sΔ) ds by Gauss–Legendre quadrature: an oracle that shares no code
    (and no rule) with lca's nested Simpson / trapezoid."""
    s, w = np.polynomial.legendre.leggauss(nodes)
    delta = np.asarray(theta1, np.float64) - np.asarray(theta0, np.float64)
    mean_grad = sum(
        wi / 2 * np.asarray(grad(theta0 + (si + 1) / 2 * delta), np.float64)
        for si, wi in zip(s, w, strict=True)
    )
    return delta * mean_grad
