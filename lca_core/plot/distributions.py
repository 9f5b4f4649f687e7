"""Figures of distributions: LCA values, helping per layer and per parameter, layer totals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..analysis import (
    HelpingFractions,
    ParameterHelping,
    compare_runs,
    helping_fractions,
    layer_totals,
    parameter_helping,
)
from ..analysis._source import Source, param_blocks
from ..storage.run import Run
from ._style import HELP, HURT, ZERO, labels, new_figure


def lca_histogram(
    source: Source, bins_per_decade: int = 8, decades: float = 12.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streamed counts of helping (−A) and hurting (A) magnitudes on log-spaced bins spanning
    ``decades`` below the largest; smaller nonzero magnitudes are left out (not piled into
    the first bin, where they would look like a peak)."""
    hi = 0.0
    for block in param_blocks(source):
        if block.size:
            hi = max(hi, float(np.abs(block).max()))
    if hi == 0.0:
        raise ValueError("every LCA value is zero: nothing to plot")
    edges = np.logspace(
        np.log10(hi) - decades,
        np.log10(hi) * (1 - 1e-12) + 1e-12,
        int(decades * bins_per_decade) + 1,
    )
    edges[-1] = max(edges[-1], hi)
    neg, pos = np.zeros(len(edges) - 1, np.int64), np.zeros(len(edges) - 1, np.int64)
    for block in param_blocks(source):
        neg += np.histogram(-block[block < 0], edges)[0]
        pos += np.histogram(block[block > 0], edges)[0]
    return edges, neg, pos


def below_range(source: Source, low: float) -> tuple[int, int]:
    """Helping and hurting allocations too small for the histogram's range."""
    neg = pos = 0
    for block in param_blocks(source):
        small = (block != 0) & (np.abs(block) < low)
        neg += int((small & (block < 0)).sum())
        pos += int((small & (block > 0)).sum())
    return neg, pos


def plot_lca_distribution(source: Source) -> Figure:
    """Fig 3b: distribution of LCA values, zeros excluded: helping magnitudes to the left
    (green), hurting to the right (red), both on log axes."""
    edges, neg, pos = lca_histogram(source)
    below = below_range(source, edges[0])
    fig = new_figure(8, 3.8)
    left, right = fig.subplots(1, 2, sharey=True)
    left.stairs(neg, edges, color=HELP, fill=True, alpha=0.75)
    right.stairs(pos, edges, color=HURT, fill=True, alpha=0.75)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(edges[0], edges[-1])
    left.set_xlabel("size of a helping allocation, |LCA| (larger → right)")
    right.set_xlabel("size of a hurting allocation, LCA (larger → right)")
    left.set_ylabel("count of (parameter, step)")
    left.set_title(f"helped: {neg.sum() + below[0]:,} allocations", color=HELP)
    right.set_title(f"hurt: {pos.sum() + below[1]:,} allocations", color=HURT)
    fig.suptitle(
        f"Distribution of LCA values (zeros left out, and {sum(below):,} values smaller "
        f"than {edges[0]:.0e})"
    )
    return fig


def plot_helping_per_layer(source: Run | HelpingFractions) -> Figure:
    """Fig 3c: % of parameter-steps helping, per layer (zeros ignored and not)."""
    h = helping_fractions(source) if isinstance(source, Run) else source
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    x = np.arange(len(h.layers))
    helped = [h.per_layer[n]["helped"] for n in h.layers]
    nonzero = [h.per_layer[n]["helped_nonzero"] for n in h.layers]
    ax.bar(x - 0.2, helped, 0.4, color=HELP, label="helped (% of all)")
    ax.bar(x + 0.2, nonzero, 0.4, color=HELP, alpha=0.5, label="helped (% of nonzero)")
    ax.axhline(50, color=ZERO, ls=":", lw=1)
    ax.set_xticks(x, labels(h.layers), rotation=30 if len(h.layers) > 6 else 0)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of parameter-steps")
    ax.set_title("Helping per layer")
    ax.legend(loc="lower right")
    return fig


def plot_parameter_helping(source: Source | ParameterHelping) -> Figure:
    """Fig 3d: fraction of the steps each parameter helped (centred near 50 % in the paper)."""
    p = source if isinstance(source, ParameterHelping) else parameter_helping(source)
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    ax.stairs(p.histogram, 100 * p.bin_edges, fill=True, color=HELP, alpha=0.7)
    ax.axvline(100 * p.median, color="k", ls="--", lw=1, label=f"median {100 * p.median:.1f} %")
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of its nonzero steps on which the parameter helped")
    ax.set_ylabel("parameters")
    ax.set_title("How often each parameter helped")
    ax.legend()
    return fig


def plot_layer_totals(
    sources: Run | np.ndarray | Sequence[Run | np.ndarray], layers: Sequence[str] | None = None
) -> Figure:
    """Fig 4: total LCA per layer (negative = helped); error bars over several runs."""
    many = (
        isinstance(sources, Sequence) and not isinstance(sources, np.ndarray) and len(sources) > 1
    )
    if many:
        cmp = compare_runs(list(sources), layers=layers)  # type: ignore[arg-type]
        names, values, errors = cmp.layers, cmp.mean, cmp.std
    else:
        single = (
            sources[0]
            if isinstance(sources, Sequence) and not isinstance(sources, np.ndarray)
            else sources
        )
        totals = layer_totals(single, layers=layers)  # type: ignore[arg-type]
        names, values, errors = totals.layers, totals.totals, None
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, values, yerr=errors, capsize=4, color=[HELP if v < 0 else HURT for v in values])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, labels(names), rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("Σ LCA over training")
    ax.set_title("Total LCA per layer" + (f" (mean ± std of {len(sources)} runs)" if many else ""))
    return fig
