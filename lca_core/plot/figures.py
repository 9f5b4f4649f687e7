"""The report's figures, keyed by the analysis whose result each one draws.

The analyses (:data:`lca_core.analysis.ANALYSES`) know nothing of matplotlib; the report
joins each analysis with its figures here, so importing the analyses loads no plotting
library and an analysis with no figure needs no entry.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..storage.run import Run
from .curves import (
    plot_helping_over_loss,
    plot_layer_curves,
    plot_loss_reconstruction,
    plot_train_vs_validation,
)
from .distributions import (
    plot_helping_per_layer,
    plot_layer_totals,
    plot_lca_distribution,
    plot_parameter_helping,
)
from .heatmaps import animate_lca, frame_steps
from .moments import plot_class_synchronization, plot_synchronization
from .parts import plot_parts_over_steps, plot_parts_per_layer

#: draws a figure from the run, the analysis' result and the animation's frame budget;
#: bytes are an animated GIF
Draw = Callable[[Run, Any, int], "Figure | bytes"]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its anchor, title, caption for a reader who has not read
    the paper, and how it is drawn."""

    key: str
    title: str
    caption: str
    draw: Draw
    #: drawn as an animated GIF (bytes), not a still figure
    animated: bool = False


def _animation(run: Run, frames: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        steps = frame_steps(run, max_frames=frames)
        gif = animate_lca(run, Path(tmp) / "lca.gif", steps, dpi=70, scale="frame")
        return gif.read_bytes()


#: the figures of each analysis (by its key in ``ANALYSES``), in report order
FIGURES: dict[str, tuple[FigureSpec, ...]] = {
    "reconstruction": (
        FigureSpec(
            "reconstruction",
            "Loss reconstruction",
            "The black line is the true loss on the evaluation set; the dashed green line "
            "starts at the first loss and adds every step's allocations. If they overlap, "
            "the allocations account for the whole loss change. Below: each step's "
            "residual (ΔL − Σ LCA) with the tolerance as dotted lines.",
            lambda run, _, __: plot_loss_reconstruction(run),
        ),
    ),
    "helping": (
        FigureSpec(
            "helping_over_loss",
            "Who helped each step (paper Fig 3a)",
            "For each step, the share of parameters whose allocation was negative "
            "(helped, green), exactly zero (grey) or positive (hurt, red), with the loss on "
            "the right axis. The paper finds barely more than half of the moving "
            "parameters help on a step.",
            lambda run, h, _: plot_helping_over_loss(h, run.losses),
        ),
        FigureSpec(
            "helping_per_layer",
            "Helping per layer (paper Fig 3c)",
            "Share of (parameter, step) pairs that helped in each layer, over all pairs and "
            "over the nonzero ones; the dotted line is 50 %.",
            lambda run, h, _: plot_helping_per_layer(h),
        ),
    ),
    "layers": (
        FigureSpec(
            "layer_curves",
            "LCA per layer over training",
            "Each layer's summed allocation per step: downward spikes are the moments a "
            "layer learned the most; values above zero mean the layer's motion raised the "
            "loss. A run on an evaluation subset shows each step's 95 % interval for the "
            "full set as a band.",
            lambda run, _, __: plot_layer_curves(run),
        ),
        FigureSpec(
            "layer_totals",
            "Total LCA per layer (paper Fig 4)",
            "Each layer's allocations summed over training. Bars below zero: the layer "
            "lowered the loss; a bar above zero means the layer hurt overall (the paper "
            "finds this for the last layer of some networks).",
            lambda run, _, __: plot_layer_totals(run),
        ),
    ),
    "generalization": (
        FigureSpec(
            "validation",
            "Evaluation-set vs validation LCA per layer (paper §4)",
            "Each layer's cumulative allocation of the evaluation-set loss (solid) and of "
            "the validation loss (dashed), the same steps allocated on both sets. Lines "
            "that fall together: the layer's learning generalises. A dashed line that "
            "flattens or rises while the solid one keeps falling: the layer is fitting the "
            "training data only (overfitting).",
            lambda run, _, __: plot_train_vs_validation(run),
        ),
    ),
    "optimizer_parts": (
        FigureSpec(
            "parts_per_layer",
            "What moved each layer: gradient, momentum, weight decay",
            "A step's change of each parameter is the optimizer's sum of terms: this step's "
            "gradient, the momentum carried from earlier steps, and weight decay. Each "
            "layer's allocation splits the same way. Bars below zero lowered the loss, "
            "above zero raised it; the black tick is the layer's net total. A layer whose "
            "net tick is above zero because of the orange bar was carried past its "
            "minimum by momentum.",
            lambda run, p, _: plot_parts_per_layer(p),
        ),
        FigureSpec(
            "parts_over_steps",
            "Each optimizer part over training",
            "The allocation of each part summed over all layers and accumulated over the "
            "steps; the dashed line is their sum, the loss change they account for. A "
            "momentum line that turns upward late in training is momentum overshooting.",
            lambda run, p, _: plot_parts_over_steps(p),
        ),
    ),
    "parameter_helping": (
        FigureSpec(
            "parameter_helping",
            "How often each parameter helped (paper Fig 3d)",
            "For each parameter, the share of the steps it moved on in which it helped. A "
            "peak near 50 % means parameters help and hurt almost equally often.",
            lambda run, p, _: plot_parameter_helping(p),
        ),
    ),
    "tails": (
        FigureSpec(
            "distribution",
            "Distribution of LCA values (paper Fig 3b)",
            "How many (parameter, step) allocations fall at each magnitude, helping on the "
            "left, hurting on the right, zeros excluded. Both sides are heavy-tailed: a few "
            "large allocations carry much of the change.",
            lambda run, _, __: plot_lca_distribution(run),
        ),
    ),
    "synchronization": (
        FigureSpec(
            "synchronization",
            "Moments of learning (paper Fig 6)",
            "Ticks mark each layer's top moments (the deepest local minima of its per-step "
            "LCA). Red columns are steps where every layer has a moment at once; the title "
            "compares their number with a baseline where each layer is shifted by up to "
            "±2 steps.",
            lambda run, s, _: plot_synchronization(s, run.steps),
        ),
    ),
    "class_synchronization": (
        FigureSpec(
            "class_synchronization",
            "Moments of learning per class (paper Fig 6, per class)",
            "For each class, the steps at which every layer of that class's LCA has a "
            "moment of learning at once (bars), against the baseline of layers shifted by "
            "up to ±2 steps (dots, ± one standard deviation).",
            lambda run, c, _: plot_class_synchronization(c),
        ),
    ),
    "heatmaps": (
        FigureSpec(
            "heatmaps",
            "Per-parameter LCA, animated (paper Fig 2)",
            "Every weight of every layer, frame by frame: green helped, red hurt, white did "
            "not change the loss. Each frame has its own colour scale (its 99th percentile "
            "of |LCA|), so late, small steps are as visible as early, large ones: compare "
            "colours within a frame, not across frames. Convolution kernels are tiled by "
            "output (rows) × input channel (columns).",
            lambda run, _, frames: _animation(run, frames),
            animated=True,
        ),
    ),
}
