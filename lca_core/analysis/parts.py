"""Why a layer helped or hurt: its LCA split by the optimizer's parts (DESIGN §13).

A run recorded with ``optimizer=`` holds each step's LCA by part and layer; the totals say
whether a layer's learning came from this step's gradient, from momentum carried from
earlier steps, or from weight decay, and which of them made a layer hurt — the paper's
phase-lag hypothesis for the hurting last layer is that momentum carries parameters past
the minimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..engine.uncertainty import sum_stderr
from ..storage.run import Run
from ._source import Result


@dataclass
class OptimizerParts(Result):
    """Per layer, each part's LCA summed over training, its share of the layer's motion
    (Σ |part totals|), and the part that decided whether the layer helped or hurt; per
    step, each part summed over layers."""

    layers: list[str]
    parts: list[str]
    totals: np.ndarray  # (parts, L): Σ_t, summing over parts to the layers' totals
    layer_totals: np.ndarray  # (L,)
    shares: np.ndarray  # (parts, L): |total| ÷ Σ_parts |total|
    decided_by: list[str]  # per layer: the largest part of the layer's sign
    per_step: np.ndarray  # (T, parts), over all layers
    #: with ``eval_subset``: an upper bound of each total's standard error (Σ_t of the
    #: steps' errors: one fixed subset's steps can be correlated up to fully)
    stderr_bound: np.ndarray | None = None


def optimizer_parts(run: Run) -> OptimizerParts:
    """Needs a run recorded with ``optimizer=``."""
    split = run.part_layer_lca  # (T, parts, L)
    totals = split.sum(axis=0)
    layer_totals = totals.sum(axis=0)
    size = np.abs(totals).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(size > 0, np.abs(totals) / size, 0.0)
    decided = []
    for j in range(len(run.layers)):
        sign = np.sign(layer_totals[j]) or -1.0
        decided.append(run.parts[int(np.argmax(sign * totals[:, j]))])
    bound = None
    if run.has("part_layer_lca_stderr"):
        # independent steps (paired) add in quadrature; otherwise Σ se bounds the total's
        # (a shared design's covariances are stored per layer, not per part)
        design = "paired" if run.design == "paired" else "fixed"
        bound = sum_stderr(run.array("part_layer_lca_stderr"), design)
    return OptimizerParts(
        layers=list(run.layers),
        parts=list(run.parts),
        totals=totals,
        layer_totals=layer_totals,
        shares=shares,
        decided_by=decided,
        per_step=split.sum(axis=2),
        stderr_bound=bound,
    )


@dataclass
class PartComparison(Result):
    """Each part's per-layer total across runs of one configuration (seeds), and a
    one-sided t-test per part and layer of "this part raises the loss" (total > 0)."""

    layers: list[str]
    parts: list[str]
    totals: np.ndarray  # (runs, parts, L)
    mean: np.ndarray  # (parts, L)
    std: np.ndarray
    p_hurts: np.ndarray  # (parts, L)


def compare_parts(runs: Sequence[Run]) -> PartComparison:
    """Across seeds: whether a part (momentum, say) hurts a layer consistently."""
    if len(runs) < 2:
        raise ValueError("comparing runs needs at least two runs of the same configuration")
    first = runs[0]
    for r in runs[1:]:
        if r.layers != first.layers or r.parts != first.parts:
            raise ValueError(f"runs differ in layers or parts: {r.path} vs {first.path}")
    totals = np.array([r.part_layer_lca.sum(axis=0) for r in runs])
    test = stats.ttest_1samp(totals, 0.0, axis=0, alternative="greater")
    return PartComparison(
        layers=list(first.layers),
        parts=list(first.parts),
        totals=totals,
        mean=totals.mean(axis=0),
        std=totals.std(axis=0, ddof=1),
        p_hurts=np.asarray(test.pvalue, dtype=np.float64),
    )
