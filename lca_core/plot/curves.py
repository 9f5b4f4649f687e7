"""Figures over training steps: loss reconstruction, helping fractions, layer curves."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from ..analysis import HelpingFractions, Reconstruction, helping_fractions, loss_reconstruction
from ..engine.uncertainty import cumulative_stderr
from ..storage.run import Run
from ._style import HELP, HURT, LOSS, ZERO, label, new_figure


def plot_loss_reconstruction(source: Run | Reconstruction, tol: float | None = None) -> Figure:
    """True loss vs L(θ_0) + cumulative Σ LCA (top), residual per step (bottom)."""
    rec = loss_reconstruction(source) if isinstance(source, Run) else source
    if tol is None and isinstance(source, Run):
        tol = float(source.config.get("tol", 1e-3))
    fig = new_figure(7, 5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    steps = np.arange(len(rec.losses))
    top.plot(steps, rec.losses, color=LOSS, lw=2, label="true loss L(θ_t)")
    top.plot(
        steps, rec.reconstructed, color=HELP, lw=1.2, ls="--", label="L(θ_0) + cumulative Σ LCA"
    )
    top.set_ylabel("loss")
    top.legend(loc="upper right")
    top.set_title("Loss reconstruction from the allocations")
    residuals = np.diff(rec.gap)
    bottom.plot(steps[1:], residuals, color=HURT, lw=1, label="residual r_t")
    if tol is not None:
        for sign in (-1, 1):
            bottom.axhline(sign * tol, color=ZERO, ls=":", lw=1)
    bottom.set_xlabel("step")
    bottom.set_ylabel("ΔL − Σ LCA")
    bottom.legend(loc="upper right")
    return fig


def plot_helping_over_loss(
    source: Run | HelpingFractions, losses: np.ndarray | None = None
) -> Figure:
    """Fig 3a: % of parameters helping / hurting / zero each step, over the loss curve."""
    h = helping_fractions(source) if isinstance(source, Run) else source
    if losses is None and isinstance(source, Run):
        losses = source.losses
    fig = new_figure(7, 4)
    ax = fig.subplots()
    steps = np.arange(1, len(h.per_step) + 1)
    ax.stackplot(
        steps,
        h.per_step[:, 0],
        h.per_step[:, 2],
        h.per_step[:, 1],
        colors=[HELP, ZERO, HURT],
        alpha=0.8,
        labels=["helped", "zero", "hurt"],
    )
    ax.set_ylim(0, 100)
    ax.set_xlabel("step")
    ax.set_ylabel("% of parameters")
    ax.set_title("Who helped each step")
    ax.legend(loc="lower left")
    if losses is not None:
        twin = ax.twinx()
        twin.plot(np.arange(len(losses)), losses, color=LOSS, lw=2, label="loss")
        twin.set_ylabel("loss")
    return fig


def plot_train_vs_validation(run: Run) -> Figure:
    """Per layer, the cumulative LCA of the evaluation loss (solid) and of the validation
    loss (dashed): where the dashed line stops following, the layer's learning no longer
    carries over to unseen data."""
    train = np.cumsum(run.layer_lca, axis=0)
    validation = np.cumsum(run.array("val_layer_lca"), axis=0)
    steps = np.arange(1, len(train) + 1)
    fig = new_figure(7, 4)
    ax = fig.subplots()
    for j, name in enumerate(run.layers):
        (line,) = ax.plot(steps, train[:, j], lw=1.5, label=f"{label(name)}: evaluation set")
        ax.plot(
            steps,
            validation[:, j],
            lw=1.5,
            ls="--",
            color=line.get_color(),
            label=f"{label(name)}: validation set",
        )
    ax.axhline(0, color=ZERO, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative LCA (negative = lowered the loss)")
    ax.set_title("What each layer's learning did to the evaluation and the validation loss")
    ax.legend(loc="lower left", fontsize=8, ncols=2)
    return fig


def plot_layer_curves(
    source: Run | np.ndarray, layers: list[str] | None = None, cumulative: bool = False
) -> Figure:
    """Per-layer LCA per step (or cumulative): when did each layer learn? A run on an
    ``eval_subset`` shows each step's (each running sum's) 95 % interval for the full set
    as a band, for its design (a fixed subset's cumulative band is the Σ se bound)."""
    band = None
    if isinstance(source, Run):
        values, names = source.layer_lca, source.layers
        if source.has("layer_lca_stderr") and source.design is not None:
            groups = source.config["eval_subset"]["groups"]
            se = source.layer_lca_stderr
            if cumulative:
                cov = (
                    source.array("layer_lca_cov_prev") if source.has("layer_lca_cov_prev") else None
                )
                se = cumulative_stderr(se, source.design, cov)
            band = stats.t.ppf(0.975, groups - 1) * se
    else:
        values = np.asarray(source)
        names = layers or [f"layer{j}" for j in range(values.shape[1])]
    if cumulative:
        values = np.cumsum(values, axis=0)
    fig = new_figure(7, 4)
    ax = fig.subplots()
    steps = np.arange(len(values))
    for j, name in enumerate(names):
        (line,) = ax.plot(steps, values[:, j], lw=1.2, label=label(name))
        if band is not None:
            low, high = values[:, j] - band[:, j], values[:, j] + band[:, j]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0, color=ZERO, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative LCA" if cumulative else "LCA per step")
    ax.set_title("LCA per layer" + (" (cumulative)" if cumulative else ""))
    ax.legend(loc="lower left", ncols=min(len(names), 4))
    return fig
