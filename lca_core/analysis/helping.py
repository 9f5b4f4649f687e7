"""Who helped: fractions of parameters helping / hurting / zero (paper Table 1, Fig 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import Layout, shares, sign_counts
from ..storage.run import Run
from ._source import DEFAULT_CHUNK, Result, Source, param_blocks


@dataclass
class HelpingFractions(Result):
    """Percentages of (parameter, step) pairs; ``helped_nonzero`` ignores zeros (Table 1)."""

    layers: list[str]
    per_step: np.ndarray  # (T, 3) % helped, hurt, zero
    per_step_helped_nonzero: np.ndarray  # (T,)
    overall: dict[str, float]
    per_layer: dict[str, dict[str, float]]


def _percentages(counts: np.ndarray) -> dict[str, float]:
    return dict(zip(("helped", "hurt", "zero", "helped_nonzero"), shares(counts), strict=True))


def counts_from_lca(lca: np.ndarray, layout: Layout | None = None) -> np.ndarray:
    """(T, K) LCA → (T, layers, 3) counts of helped / hurt / zero (one layer if no layout)."""
    lca = np.asarray(lca)
    if layout is None:
        layout = Layout.from_shapes({"all": (lca.shape[1],)})
    return sign_counts(lca, layout)


def helping_fractions(source: Source, layout: Layout | None = None) -> HelpingFractions:
    """From a run's always-stored counts, or from a (T, K) LCA array (with its layout)."""
    if isinstance(source, Run):
        counts, layers = source.layer_counts, source.layers
    else:
        counts = counts_from_lca(source, layout)
        layers = list(layout.layers) if layout is not None else ["all"]
    per_step_counts = counts.sum(axis=1).astype(np.float64)  # (T, 3)
    totals = np.maximum(per_step_counts.sum(axis=1, keepdims=True), 1)
    nonzero = per_step_counts[:, 0] + per_step_counts[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        helped_nonzero = np.where(nonzero > 0, 100.0 * per_step_counts[:, 0] / nonzero, np.nan)
    return HelpingFractions(
        layers=list(layers),
        per_step=100.0 * per_step_counts / totals,
        per_step_helped_nonzero=helped_nonzero,
        overall=_percentages(counts.sum(axis=(0, 1))),
        per_layer={name: _percentages(counts[:, j].sum(axis=0)) for j, name in enumerate(layers)},
    )


@dataclass
class ParameterHelping(Result):
    """Per parameter, the share of the steps it moved on in which it helped (Fig 3d)."""

    fraction_helped: np.ndarray  # (K,), NaN for parameters never nonzero
    bin_edges: np.ndarray
    histogram: np.ndarray
    mean: float
    median: float


def parameter_helping(
    source: Source, bins: int = 20, chunk_steps: int = DEFAULT_CHUNK
) -> ParameterHelping:
    """Streams the per-parameter LCA; needs ``store_params=True`` for a run."""
    helped = nonzero = None
    for block in param_blocks(source, chunk_steps=chunk_steps):
        h, n = (block < 0).sum(axis=0), (block != 0).sum(axis=0)
        helped = h if helped is None else helped + h
        nonzero = n if nonzero is None else nonzero + n
    if helped is None or nonzero is None:
        raise ValueError("no steps to analyse")
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(nonzero > 0, helped / np.maximum(nonzero, 1), np.nan)
    finite = fraction[np.isfinite(fraction)]
    hist, edges = np.histogram(finite, bins=bins, range=(0.0, 1.0))
    return ParameterHelping(
        fraction_helped=fraction,
        bin_edges=edges,
        histogram=hist,
        mean=float(finite.mean()) if finite.size else float("nan"),
        median=float(np.median(finite)) if finite.size else float("nan"),
    )
