"""The one list of analyses: what each needs, computes, prints and draws.

``analyze`` (the CLI's ``lca analyze``), the terminal text and ``lca report`` all iterate
:data:`ANALYSES`, so an analysis is added in one place. Each one declares the run arrays it
needs (as Cockpit's instruments declare theirs); what a run lacks is reported with the
option that records it, before anything is computed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from matplotlib.figure import Figure

from ..errors import InsufficientDataError
from ..run import Run
from . import text
from .accuracy import accuracy
from .helping import helping_fractions, parameter_helping
from .layers import concentration, generalization, layer_totals
from .moments import class_synchronization, synchronization
from .oscillations import oscillations
from .reconstruction import loss_reconstruction
from .tails import tails

#: the recording option that stores each opt-in array
RECORDED_BY = {
    "param_lca": "store_params=True",
    "theta": "store_trajectory=True",
    "grads": "store_grads=True",
    "class_layer_lca": "per_class=True",
    "val_layer_lca": "val_data=",
}


def _plot() -> ModuleType:
    """``lca_core.plot``, imported when a figure is drawn (it imports this package)."""
    from .. import plot

    return plot


def _animation(run: Run, frames: int) -> bytes:
    plot = _plot()
    with tempfile.TemporaryDirectory() as tmp:
        steps = plot.frame_steps(run, max_frames=frames)
        gif = plot.animate_lca(run, Path(tmp) / "lca.gif", steps, dpi=70, scale="frame")
        return gif.read_bytes()


#: draws a figure from the run, the analysis' result and the animation's frame budget;
#: bytes are an animated GIF
Draw = Callable[[Run, Any, int], "Figure | bytes"]


@dataclass(frozen=True)
class FigureSpec:
    key: str
    title: str
    caption: str
    draw: Draw
    #: drawn as an animated GIF (bytes), not a still figure
    animated: bool = False


@dataclass(frozen=True)
class Analysis:
    """One analysis: its key in ``analyze()``'s results, its section title, the arrays it
    needs (all of ``requires``, at least one of ``any_of``), how it is computed from a run
    (``seed`` for the random baselines), rendered as text and drawn."""

    key: str
    title: str
    compute: Callable[[Run, int], Any] | None
    requires: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    text: Callable[[Any], list[str]] | None = None
    figures: tuple[FigureSpec, ...] = ()

    def missing(self, run: Run) -> str | None:
        """Why the run cannot give this analysis (None when it can)."""
        if not run.steps:
            return "the run has no allocated step (replay a recorded run first)"
        absent = [name for name in self.requires if not run.has(name)]
        if self.any_of and not any(run.has(name) for name in self.any_of):
            absent.append(" or ".join(self.any_of))
        if not absent:
            return None
        options = [
            RECORDED_BY[n] for name in absent for n in name.split(" or ") if n in RECORDED_BY
        ]
        how = f"; record the run with {' and/or '.join(options)}" if options else ""
        return f"needs {', '.join(absent)}, which this run did not store{how}"


ANALYSES: tuple[Analysis, ...] = (
    Analysis(
        "reconstruction",
        "Loss reconstruction",
        lambda run, _: loss_reconstruction(run),
        text=text.reconstruction,
        figures=(
            FigureSpec(
                "reconstruction",
                "Loss reconstruction",
                "The black line is the true loss on the evaluation set; the dashed green line "
                "starts at the first loss and adds every step's allocations. If they overlap, "
                "the allocations account for the whole loss change. Below: each step's "
                "residual (ΔL − Σ LCA) with the tolerance as dotted lines.",
                lambda run, _, __: _plot().plot_loss_reconstruction(run),
            ),
        ),
    ),
    Analysis(
        "helping",
        "Helping per layer (% of parameter-steps)",
        lambda run, _: helping_fractions(run),
        text=text.helping,
        figures=(
            FigureSpec(
                "helping_over_loss",
                "Who helped each step (paper Fig 3a)",
                "For each step, the share of parameters whose allocation was negative "
                "(helped, green), exactly zero (grey) or positive (hurt, red), with the loss on "
                "the right axis. The paper finds barely more than half of the moving "
                "parameters help on a step.",
                lambda run, h, _: _plot().plot_helping_over_loss(h, run.losses),
            ),
            FigureSpec(
                "helping_per_layer",
                "Helping per layer (paper Fig 3c)",
                "Share of (parameter, step) pairs that helped in each layer, over all pairs and "
                "over the nonzero ones; the dotted line is 50 %.",
                lambda run, h, _: _plot().plot_helping_per_layer(h),
            ),
        ),
    ),
    Analysis(
        "layers",
        "Total LCA per layer",
        lambda run, _: layer_totals(run),
        figures=(
            FigureSpec(
                "layer_curves",
                "LCA per layer over training",
                "Each layer's summed allocation per step: downward spikes are the moments a "
                "layer learned the most; values above zero mean the layer's motion raised the "
                "loss. A run on an evaluation subset shows each step's 95 % interval for the "
                "full set as a band.",
                lambda run, _, __: _plot().plot_layer_curves(run),
            ),
            FigureSpec(
                "layer_totals",
                "Total LCA per layer (paper Fig 4)",
                "Each layer's allocations summed over training. Bars below zero: the layer "
                "lowered the loss; a bar above zero means the layer hurt overall (the paper "
                "finds this for the last layer of some networks).",
                lambda run, _, __: _plot().plot_layer_totals(run),
            ),
        ),
    ),
    Analysis(
        "generalization",
        "Evaluation vs validation LCA per layer (which layers generalise)",
        lambda run, _: generalization(run),
        requires=("val_layer_lca",),
        text=text.generalization,
        figures=(
            FigureSpec(
                "validation",
                "Training-set vs validation LCA per layer (paper §4)",
                "Each layer's cumulative allocation of the evaluation-set loss (solid) and of "
                "the validation loss (dashed), the same steps allocated on both sets. Lines "
                "that fall together: the layer's learning generalises. A dashed line that "
                "flattens or rises while the solid one keeps falling: the layer is fitting the "
                "training data only (overfitting).",
                lambda run, _, __: _plot().plot_train_vs_validation(run),
            ),
        ),
    ),
    Analysis(
        "parameter_helping",
        "Fraction of steps each parameter helped",
        lambda run, _: parameter_helping(run),
        requires=("param_lca",),
        text=text.parameter_helping,
        figures=(
            FigureSpec(
                "parameter_helping",
                "How often each parameter helped (paper Fig 3d)",
                "For each parameter, the share of the steps it moved on in which it helped. A "
                "peak near 50 % means parameters help and hurt almost equally often.",
                lambda run, p, _: _plot().plot_parameter_helping(p),
            ),
        ),
    ),
    Analysis(
        "concentration",
        "Concentration of learning",
        lambda run, _: concentration(run),
        requires=("param_lca",),
        text=text.concentration,
    ),
    Analysis(
        "tails",
        "Tails (nonzero LCA values)",
        lambda run, seed: tails(run, seed=seed),
        requires=("param_lca",),
        text=text.tails,
        figures=(
            FigureSpec(
                "distribution",
                "Distribution of LCA values (paper Fig 3b)",
                "How many (parameter, step) allocations fall at each magnitude, helping on the "
                "left, hurting on the right, zeros excluded. Both sides are heavy-tailed: a few "
                "large allocations carry much of the change.",
                lambda run, _, __: _plot().plot_lca_distribution(run),
            ),
        ),
    ),
    Analysis(
        "oscillations",
        "Oscillations (mean steps between changes of sign)",
        lambda run, _: oscillations(run),
        any_of=("theta", "grads"),
        text=text.oscillations,
    ),
    Analysis(
        "synchronization",
        "Synchronised moments of learning (layers)",
        lambda run, seed: synchronization(run, seed=seed),
        text=text.synchronization,
        figures=(
            FigureSpec(
                "synchronization",
                "Moments of learning (paper Fig 6)",
                "Ticks mark each layer's top moments (the deepest local minima of its per-step "
                "LCA). Red columns are steps where every layer has a moment at once; the title "
                "compares their number with a baseline where each layer is shifted by up to "
                "±2 steps.",
                lambda run, s, _: _plot().plot_synchronization(s, run.steps),
            ),
        ),
    ),
    Analysis(
        "class_synchronization",
        "Synchronised moments of learning within each class",
        lambda run, seed: class_synchronization(run, seed=seed),
        requires=("class_layer_lca",),
        text=text.class_synchronization,
        figures=(
            FigureSpec(
                "class_synchronization",
                "Moments of learning per class (paper Fig 6, per class)",
                "For each class, the steps at which every layer of that class's LCA has a "
                "moment of learning at once (bars), against the baseline of layers shifted by "
                "up to ±2 steps (dots, ± one standard deviation).",
                lambda run, c, _: _plot().plot_class_synchronization(c),
            ),
        ),
    ),
    Analysis(
        "accuracy",
        "Accuracy",
        lambda run, _: accuracy(run),
        text=text.accuracy,
    ),
    Analysis(
        "heatmaps",
        "Per-parameter LCA",
        None,
        requires=("param_lca",),
        figures=(
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
    ),
)


def unavailable(reason: str) -> dict[str, str]:
    """The result of an analysis the run cannot give: why, and how to record it."""
    return {"unavailable": reason}


def analyze(run: Run, *, seed: int = 0) -> dict[str, Any]:
    """Every analysis the run holds data for; what cannot be computed says why."""
    results: dict[str, Any] = {"summary": run.summary(), "metadata": run.metadata}
    for a in ANALYSES:
        if a.compute is None:
            continue
        reason = a.missing(run)
        if reason is not None:
            results[a.key] = unavailable(reason)
            continue
        try:
            results[a.key] = a.compute(run, seed)
        except InsufficientDataError as exc:
            results[a.key] = unavailable(str(exc))
    return results


def format_analysis(results: dict[str, Any]) -> str:
    """One section per analysis; an unavailable one says what it needs."""
    out = ["== Summary", str(results["summary"])]
    for a in ANALYSES:
        value = results.get(a.key)
        if a.text is None or value is None:
            continue
        out.append(f"\n== {a.title}")
        if isinstance(value, dict) and "unavailable" in value:
            out.append(f"  not available: {value['unavailable']}")
        else:
            out.extend(a.text(value))
    return "\n".join(out)
