"""Fig 6: moments of learning per series, synchronised ones highlighted."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from ..analysis import Synchronization, synchronization
from ..storage.run import Run
from ._style import HELP, HURT, LOSS, labels, new_figure


def plot_synchronization(
    source: Run | Synchronization,
    steps: int | None = None,
    title: str = "Moments of learning per layer",
) -> Figure:
    """A raster: one row per series, a tick at each of its top moments (local minima of its
    LCA); red columns mark steps where every series has a moment."""
    sync = synchronization(source) if isinstance(source, Run) else source
    if steps is None:
        steps = (
            source.steps
            if isinstance(source, Run)
            else max([max(p, default=0) for p in sync.peaks.values()], default=0) + 1
        )
    fig = new_figure(7, 0.6 + 0.45 * len(sync.names) + 0.8)
    ax = fig.subplots()
    for t in sync.synchronized:
        ax.axvspan(t - 0.5, t + 0.5, color=HURT, alpha=0.25, lw=0)
    for row, name in enumerate(sync.names):
        peaks = np.asarray(sync.peaks[name])
        ax.scatter(peaks, np.full(len(peaks), row), marker="|", s=200, color=HELP)
    ax.set_yticks(range(len(sync.names)), labels(sync.names))
    ax.set_ylim(len(sync.names) - 0.5, -0.5)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_xlabel("step")
    ax.set_title(
        f"{title}: every series learns at once at {sync.count} steps\n"
        f"(layers shifted at random: {sync.baseline_mean:.1f} expected; "
        f"p = {sync.p_value:.2g}, small = not chance)",
        fontsize=10,
    )
    return fig


def plot_class_synchronization(per_class: Mapping[int, Synchronization]) -> Figure:
    """Per class, the synchronised moments of its layers (bars) against the shift baseline
    (dots, ± one standard deviation): is learning synchronised within every class?"""
    classes = list(per_class)
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    x = np.arange(len(classes))
    ax.bar(x, [per_class[c].count for c in classes], color=HELP, label="synchronised")
    ax.errorbar(
        x,
        [per_class[c].baseline_mean for c in classes],
        yerr=[per_class[c].baseline_std for c in classes],
        fmt="o",
        color=LOSS,
        label="shifted baseline",
    )
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("steps where every layer learns")
    ax.legend(frameon=False)
    return fig
