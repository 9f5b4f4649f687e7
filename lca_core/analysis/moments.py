"""Moments of learning and their synchronisation across layers (paper §5, Fig 6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InsufficientDataError
from ..storage.run import Run
from ._source import Result


def local_minima(series: np.ndarray, top: int = 20) -> np.ndarray:
    """Steps of the ``top`` most negative strict local minima below zero, sorted by step."""
    x = np.asarray(series, dtype=np.float64)
    if len(x) < 3:
        return np.zeros(0, dtype=np.int64)
    inner = np.flatnonzero((x[1:-1] < x[:-2]) & (x[1:-1] < x[2:]) & (x[1:-1] < 0)) + 1
    best = inner[np.argsort(x[inner], kind="stable")[:top]]
    return np.sort(best)


def _count_synchronised(peaks: list[np.ndarray], tolerance: int) -> np.ndarray:
    """Peaks of the first series that every other series matches within ±tolerance."""
    first = peaks[0]
    ok = np.ones(len(first), dtype=bool)
    for other in peaks[1:]:
        if len(other) == 0:
            return np.zeros(0, dtype=np.int64)
        distance = np.abs(first[:, None] - other[None, :]).min(axis=1)
        ok &= distance <= tolerance
    return first[ok]


@dataclass
class Synchronization(Result):
    """Synchronised moments of learning with a shift baseline and its p-value."""

    names: list[str]
    peaks: dict[str, list[int]]
    synchronized: list[int]
    count: int
    baseline_mean: float
    baseline_std: float
    p_value: float
    draws: int
    tolerance: int
    shift: int


def synchronization(
    series: np.ndarray | Run,
    names: Sequence[str] | None = None,
    *,
    top: int = 20,
    tolerance: int = 0,
    shift: int = 2,
    draws: int = 1000,
    seed: int = 0,
) -> Synchronization:
    """``series``: (T, S) per-layer (or per-class) LCA, or a run (its layer LCA).

    Baseline: each series' peaks shifted independently by a random −shift…+shift steps;
    p-value = (1 + #draws with at least as many synchronised moments) / (1 + draws).
    """
    if isinstance(series, Run):
        names = names or series.layers
        series = series.layer_lca
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise InsufficientDataError(
            "synchronisation needs a (steps, series) array with at least 2 series (layers)"
        )
    labels = list(names) if names is not None else [f"series{j}" for j in range(x.shape[1])]
    peaks = [local_minima(x[:, j], top) for j in range(x.shape[1])]
    observed = _count_synchronised(peaks, tolerance)
    rng = np.random.default_rng(seed)
    baseline = np.empty(draws)
    for d in range(draws):
        shifted = [p + rng.integers(-shift, shift + 1) for p in peaks]
        baseline[d] = len(_count_synchronised(shifted, tolerance))
    p = (1 + np.sum(baseline >= len(observed))) / (1 + draws)
    return Synchronization(
        names=labels,
        peaks={n: p_.tolist() for n, p_ in zip(labels, peaks, strict=True)},
        synchronized=observed.tolist(),
        count=len(observed),
        baseline_mean=float(baseline.mean()),
        baseline_std=float(baseline.std()),
        p_value=float(p),
        draws=draws,
        tolerance=tolerance,
        shift=shift,
    )


def class_synchronization(run: Run, **options: object) -> dict[int, Synchronization]:
    """Synchronisation of the layers within each class's LCA (needs ``per_class=True``)."""
    per_class = run.array("class_layer_lca")  # (T, C, L)
    return {
        c: synchronization(per_class[:, c, :], run.layers, **options)  # type: ignore[arg-type]
        for c in range(per_class.shape[1])
    }
