"""Figures for every analysis (matplotlib, Agg only: nothing pops up). Each returns a
``matplotlib.figure.Figure``; :func:`animate_lca` writes the Fig 2 animation. The report's
figures of each analysis are in :data:`FIGURES`."""

from __future__ import annotations

from .curves import (
    plot_helping_over_loss,
    plot_layer_curves,
    plot_loss_reconstruction,
    plot_train_vs_validation,
)
from .distributions import (
    lca_histogram,
    plot_helping_per_layer,
    plot_layer_totals,
    plot_lca_distribution,
    plot_parameter_helping,
)
from .figures import FIGURES, FigureSpec
from .heatmaps import animate_lca, as_image, frame_steps, plot_lca_heatmaps
from .moments import plot_class_synchronization, plot_synchronization
from .parts import plot_parts_over_steps, plot_parts_per_layer

__all__ = [
    "FIGURES",
    "FigureSpec",
    "animate_lca",
    "as_image",
    "frame_steps",
    "lca_histogram",
    "plot_class_synchronization",
    "plot_helping_over_loss",
    "plot_helping_per_layer",
    "plot_layer_curves",
    "plot_layer_totals",
    "plot_lca_distribution",
    "plot_lca_heatmaps",
    "plot_loss_reconstruction",
    "plot_parameter_helping",
    "plot_parts_over_steps",
    "plot_parts_per_layer",
    "plot_synchronization",
    "plot_train_vs_validation",
]
