"""Shared figure helpers: Agg-only figures (nothing pops up), the LCA colours."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

HELP = "#1a9641"  # green: the parameter lowered the loss
HURT = "#d7191c"  # red: it raised the loss
ZERO = "#bdbdbd"
LOSS = "#252525"
#: green (helped) → white (zero) → red (hurt), for a symmetric norm around 0
LCA_CMAP = LinearSegmentedColormap.from_list("lca", [HELP, "#ffffff", HURT])


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A figure on the Agg canvas, independent of pyplot's global state."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def label(name: str) -> str:
    """A layer or parameter name as matplotlib text: ``$`` literal, never TeX math (a
    layer named ``a$b`` must not fail a figure)."""
    return name.replace("$", r"\$")


def labels(names: list[str] | tuple[str, ...]) -> list[str]:
    return [label(n) for n in names]
