"""Reading a run store: the read API analyses, figures, reports and users rely on.

Everything returned stops at the last committed step, so a run that is still being written,
or one that was killed, reads as a whole run of fewer steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .contract import DEFAULT_BUDGET
from .layout import Layout
from .store import POINT_ARRAYS, open_group, read_commit
from .summary import Summary, summarize


class Run:
    """A run store opened for reading (see :func:`open_run`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._group, self._meta = open_group(self.path, "r")
        counters = read_commit(self._group)
        #: number of steps with committed LCA
        self.steps = counters.get("lca", 0)
        self._lca_started = bool(counters.get("lca_started", 0))
        #: number of recorded trajectory steps (θ_0…θ_n has n+1 rows)
        self.recorded_steps = counters.get("trajectory", 0)
        self._trajectory_started = bool(counters.get("trajectory_started", 0))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, steps={self.steps}, layers={len(self.layers)})"

    # -- metadata -----------------------------------------------------------------------
    @cached_property
    def layout(self) -> Layout:
        return Layout.from_list(self._meta["layout"])

    @property
    def layers(self) -> list[str]:
        return list(self._meta["layers"])

    @property
    def metadata(self) -> dict[str, Any]:
        """The user's and the writer's metadata, with the allocation config and policy."""
        keep = ("metadata", "config", "policy", "backend", "created", "num_classes")
        return {k: self._meta[k] for k in keep if k in self._meta}

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._meta.get("config", {}))

    def has(self, name: str) -> bool:
        return name in set(self._group.array_keys())

    # -- arrays -------------------------------------------------------------------------
    def _rows(self, name: str) -> int:
        point = name in POINT_ARRAYS
        if name == "theta":
            return self.recorded_steps + int(self._trajectory_started)
        return self.steps + int(point and self._lca_started)

    def _require(self, name: str) -> Any:
        if not self.has(name):
            raise KeyError(
                f"{self.path} has no {name!r}; stored: {sorted(self._group.array_keys())}. "
                "Opt-in arrays (param_lca, grads, theta, per-class, validation) must be asked "
                "for when the run is recorded."
            )
        return self._group[name]

    def array(self, name: str, steps: slice | None = None) -> np.ndarray:
        """The committed rows of a stored array (optionally a slice of them)."""
        arr = self._require(name)
        rows = self._row_slice(name, steps)
        return arr[rows] if rows.stop > rows.start else self._empty(name)

    def _empty(self, name: str) -> np.ndarray:
        arr = self._group[name]
        return np.zeros((0, *arr.shape[1:]), dtype=arr.dtype)

    @property
    def losses(self) -> np.ndarray:
        """L(θ_0)…L(θ_T) on the evaluation set, (T+1,)."""
        return self.array("losses")

    @property
    def layer_lca(self) -> np.ndarray:
        """LCA summed over each layer's parameters, (T, n_layers)."""
        return self.array("layer_lca")

    @property
    def residuals(self) -> np.ndarray:
        """ΔL − Σ LCA of each step (excluding buffer drift), (T,)."""
        return self.array("residuals")

    @property
    def converged(self) -> np.ndarray:
        return self.array("converged")

    @property
    def panels(self) -> np.ndarray:
        """Quadrature sub-intervals each step ended with, (T,)."""
        return self.array("panels")

    @property
    def drift(self) -> np.ndarray:
        """Loss change not caused by θ (e.g. BatchNorm running stats moving), (T,)."""
        return self.array("drift")

    @property
    def step_index(self) -> np.ndarray:
        """The optimizer step number each LCA step ends at, (T,)."""
        return self.array("step_index")

    @property
    def layer_counts(self) -> np.ndarray:
        """Parameters that helped / hurt / were zero, per step and layer, (T, n_layers, 3)."""
        return self.array("layer_counts")

    def param_lca(self, key: str, steps: slice | None = None) -> np.ndarray:
        """Per-parameter LCA of a parameter, (T, *shape); of a layer, (T, K_layer) with its
        parameters raveled and concatenated in layout order."""
        layout = self.layout
        names = (
            [key]
            if key in {p.name for p in layout.params}
            else [p.name for p in layout.layer_params(key)]
        )
        cols = np.concatenate([np.arange(layout.size)[layout.slice_of(n)] for n in names])
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        arr = self._require("param_lca")
        rows = self._row_slice("param_lca", steps)
        block = arr[rows, lo:hi] if hi - lo == len(cols) else arr[rows][:, cols]
        if len(names) == 1:
            return block.reshape(len(block), *layout.param(names[0]).shape)
        return block

    def _row_slice(self, name: str, steps: slice | None) -> slice:
        start, stop, step = (steps or slice(None)).indices(self._rows(name))
        return slice(start, max(start, stop), step)

    def iter_array(
        self, name: str, chunk_steps: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream a stored array as (first row, block) pairs: memory stays bounded."""
        n = chunk_steps or self._require(name).chunks[0]
        for start in range(0, self._rows(name), n):
            yield start, self.array(name, slice(start, start + n))

    def iter_param_lca(self, chunk_steps: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream per-parameter LCA as (first step, (n, K) block) pairs."""
        return self.iter_array("param_lca", chunk_steps)

    def theta(self, t: int) -> np.ndarray:
        """Recorded parameters θ_t (flat, in the model's dtype)."""
        rows = self._rows("theta")
        if not self.has("theta") or not 0 <= t < rows:
            raise IndexError(f"θ_{t} is not recorded; this run has {rows} recorded points")
        return self._group["theta"][t]

    # -- summary ------------------------------------------------------------------------
    def summary(self) -> Summary:
        """The figures a user looks at first (all plain Python numbers)."""
        passes = self._meta.get("gradient_passes")
        n = len(self.layers)
        allocated = self.has("residuals")  # a record-only run has the trajectory alone
        return summarize(
            losses=self.losses if allocated else np.zeros(0),
            layer_lca=self.layer_lca if allocated else np.zeros((0, n)),
            residuals=self.residuals if allocated else np.zeros(0),
            drift=self.drift if allocated else np.zeros(0),
            converged=self.converged if allocated else np.zeros(0, bool),
            layer_counts=self.layer_counts if allocated else np.zeros((0, n, 3), np.int64),
            layers=self.layers,
            budget=float(self.config.get("budget", DEFAULT_BUDGET)),
            gradient_passes=int(passes) if passes is not None else None,
            recorded_steps=self.recorded_steps if self.config.get("record_only") else 0,
        )


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open a run store for reading; raises NotARunError / FormatVersionError with advice."""
    return Run(path)
