"""Fig 2: per-parameter LCA of each layer as heatmaps, frame by frame, as an animation.

Green helps, red hurts, white is zero. A weight matrix (out, in) is shown as it is; a
convolution kernel (out, in, kh, kw) as a grid of kh × kw tiles, one row per output and
one column per input channel; a bias as a single column.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import animation
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..layout import ParamSpec
from ..storage.run import Run
from ._style import LCA_CMAP, label, new_figure


def as_image(values: np.ndarray, spec: ParamSpec) -> np.ndarray:
    """A parameter's values laid out as a 2-D image (NaN = gap between conv tiles), output
    neurons down the rows. Channel-last kernels (Keras, flax: (..., in, out), the neuron
    axis last) are brought to PyTorch's (out, in, ...) order first."""
    v = np.asarray(values, dtype=np.float64).reshape(spec.shape)
    if v.ndim == 0:
        return v.reshape(1, 1)
    if v.ndim == 1:
        return v[:, None]
    if spec.neuron_axis == v.ndim - 1:  # (..., in, out) → (out, in, ...)
        v = np.transpose(v, (v.ndim - 1, v.ndim - 2, *range(v.ndim - 2)))
    if v.ndim == 2:
        return v
    out_c, in_c = v.shape[:2]
    tile = v.reshape(out_c, in_c, v.shape[2], -1)
    kh, kw = tile.shape[2:]
    image = np.full((out_c * (kh + 1) - 1, in_c * (kw + 1) - 1), np.nan)
    for o in range(out_c):
        for i in range(in_c):
            image[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = tile[o, i]
    return image


def frame_steps(
    run: Run, steps: slice | Sequence[int] | None = None, max_frames: int = 60
) -> list[int]:
    """Steps to draw: a slice/list given by the user, else evenly spaced over the run."""
    if isinstance(steps, slice):
        return list(range(run.steps))[steps]
    if steps is not None:
        return [int(t) for t in steps]
    return sorted(set(np.linspace(0, run.steps - 1, min(max_frames, run.steps)).astype(int)))


class HeatmapFigure:
    """One figure holding a heatmap per parameter; :meth:`show` draws a given step.

    ``scale="run"``: one colour scale for every frame (the 99th percentile of |LCA| over the
    frames), so frames compare — but early, large steps can wash out later ones. ``"frame"``:
    each frame on its own 99th percentile, so every step is visible; compare colours within a
    frame only. Every panel of a frame shares the scale either way.
    """

    def __init__(
        self,
        run: Run,
        steps: Sequence[int],
        params: Sequence[str] | None = None,
        scale: str = "run",
    ):
        if scale not in ("run", "frame"):
            raise ValueError(f"scale must be 'run' or 'frame', not {scale!r}")
        self.run, self.scale = run, scale
        names = list(params) if params is not None else [p.name for p in run.layout.params]
        self.specs = [run.layout.param(n) for n in names]
        cols = min(len(self.specs), 4)
        rows = int(np.ceil(len(self.specs) / cols))
        self.figure: Figure = new_figure(3.2 * cols, 2.8 * rows + 0.4)
        axes = np.atleast_1d(self.figure.subplots(rows, cols, squeeze=False)).ravel()
        for ax in axes[len(self.specs) :]:
            ax.set_axis_off()
        sample = steps[:: max(1, len(steps) // 10)]
        block = np.abs(
            np.concatenate(
                [
                    run.param_lca(spec.name, slice(t, t + 1)).ravel()
                    for spec in self.specs
                    for t in sample
                ]
            )
        )
        limit = _limit(block)
        self.norm = norm = Normalize(-limit, limit)  # every panel shares it: one colour bar
        self.images = []
        for ax, spec in zip(axes, self.specs, strict=False):
            blank = as_image(np.zeros(spec.shape), spec)
            image = ax.imshow(
                blank, cmap=LCA_CMAP, norm=norm, interpolation="nearest", aspect="auto"
            )
            ax.set_title(label(spec.name), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            self.images.append(image)
        self.figure.colorbar(
            self.images[-1],
            ax=list(axes[: len(self.specs)]),
            shrink=0.8,
            label="LCA (green helps, red hurts)",
        )
        self.title = self.figure.suptitle("")

    def show(self, step: int) -> None:
        values = [self.run.param_lca(spec.name, slice(step, step + 1))[0] for spec in self.specs]
        if self.scale == "frame":
            limit = _limit(np.abs(np.concatenate([np.ravel(v) for v in values])))
            self.norm.vmin, self.norm.vmax = -limit, limit
        for image, spec, v in zip(self.images, self.specs, values, strict=True):
            image.set_data(as_image(v, spec))
        scale = " (colour scale of this frame)" if self.scale == "frame" else ""
        self.title.set_text(f"per-parameter LCA — step {step} of {self.run.steps}{scale}")


def _limit(magnitudes: np.ndarray) -> float:
    """The colour scale's half-width: the 99th percentile of |LCA| (the max if that is 0)."""
    return float(np.percentile(magnitudes, 99)) or float(magnitudes.max()) or 1.0


def plot_lca_heatmaps(run: Run, step: int, params: Sequence[str] | None = None) -> Figure:
    """Fig 2 for one step."""
    heat = HeatmapFigure(run, [step], params)
    heat.show(step)
    return heat.figure


def animate_lca(
    run: Run,
    path: str | os.PathLike[str],
    steps: slice | Sequence[int] | None = None,
    *,
    params: Sequence[str] | None = None,
    fps: int = 8,
    dpi: int = 80,
    scale: str = "run",
) -> Path:
    """Render Fig 2 frame by frame into an animated GIF (or MP4 when ``path`` ends in .mp4
    and ffmpeg is installed); ``scale`` as in :class:`HeatmapFigure`. Returns the path."""
    path = Path(path)
    frames = frame_steps(run, steps)
    if not frames:
        raise ValueError("no steps selected for the animation")
    if path.suffix == ".mp4":
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("writing MP4 needs ffmpeg on PATH; write a .gif instead")
        writer: animation.AbstractMovieWriter = animation.FFMpegWriter(fps=fps)
    else:
        writer = animation.PillowWriter(fps=fps)
    heat = HeatmapFigure(run, frames, params, scale)
    with writer.saving(heat.figure, str(path), dpi):
        for t in frames:
            heat.show(t)
            writer.grab_frame()
    return path
