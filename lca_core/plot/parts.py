"""Figures of the optimizer split: per layer, the parts stacked; over steps, each part."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..analysis import OptimizerParts, optimizer_parts
from ..storage.run import Run
from ._style import LOSS, labels, new_figure

#: a colour per part, the same in every figure (blue: gradient, orange: momentum, purple:
#: weight decay; helping and hurting are read from the sign, not the colour)
PART_COLOURS = {"gradient": "#2b83ba", "momentum": "#fdae61", "weight_decay": "#7b3294"}


def _parts(source: Run | OptimizerParts) -> OptimizerParts:
    return optimizer_parts(source) if isinstance(source, Run) else source


def plot_parts_per_layer(source: Run | OptimizerParts) -> Figure:
    """Each layer's total LCA split by part: the parts that lowered the loss stacked below
    zero, those that raised it above, the layer's net total as a black tick."""
    p = _parts(source)
    fig = new_figure(7, 3.8)
    ax = fig.subplots()
    x = np.arange(len(p.layers))
    below, above = np.zeros(len(x)), np.zeros(len(x))
    for i, part in enumerate(p.parts):
        values = p.totals[i]
        base = np.where(values < 0, below, above)
        ax.bar(x, values, 0.6, bottom=base, color=PART_COLOURS.get(part), label=part)
        below += np.minimum(values, 0)
        above += np.maximum(values, 0)
    ax.scatter(x, p.layer_totals, marker="_", s=900, color=LOSS, zorder=3, label="net total")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, labels(p.layers), rotation=30 if len(x) > 6 else 0)
    ax.set_ylabel("Σ LCA over training (< 0: lowered the loss)")
    ax.set_title("What moved each layer: its LCA by optimizer part")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def plot_parts_over_steps(source: Run | OptimizerParts) -> Figure:
    """Each part's LCA summed over layers, cumulated over steps, and their sum (the
    loss change the allocation accounts for)."""
    p = _parts(source)
    fig = new_figure(7, 3.8)
    ax = fig.subplots()
    steps = np.arange(1, len(p.per_step) + 1)
    cumulative = np.cumsum(p.per_step, axis=0)
    for i, part in enumerate(p.parts):
        ax.plot(steps, cumulative[:, i], color=PART_COLOURS.get(part), lw=1.8, label=part)
    ax.plot(steps, cumulative.sum(axis=1), color=LOSS, lw=1.2, ls="--", label="all parts (Σ LCA)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative LCA (all layers)")
    ax.set_title("Each optimizer part's share of the loss change over training")
    ax.legend(loc="best", fontsize=8)
    return fig
