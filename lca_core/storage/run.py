"""Reading a run store: the read API analyses, figures, reports and users rely on.

Everything returned stops at the last committed step, so a run that is still being written,
or one that was killed, reads as a whole run of fewer steps. Nothing on disk is trusted:
:func:`~lca_core.storage.integrity.check_run` validates the store when it is opened, the per-step
arrays are read (and checked finite) then, and the per-parameter arrays are checked as they
are read; any damage is a :class:`~lca_core.errors.CorruptRunError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.resampled import CheckResult, RunCheck, check_result
from ..engine.summary import Summary, summarize
from ..errors import CorruptRunError
from ..options import Options
from .integrity import check_run, reading
from .store import WIDE_ROW_BYTES, open_group, recorded_by


class Run:
    """A run store opened for reading (see :func:`open_run`): the per-step arrays
    (``losses``, ``layer_lca``, ``residuals``, …), the opt-in ones through
    :meth:`array` and :meth:`param_lca`, the options it was recorded with, its summary.
    Accessing an array the run did not store raises a KeyError naming the option that
    records it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        checked = check_run(self.path)
        with reading(self.path, "the run's group"):
            self._group, self._meta = open_group(self.path, "r")
        self._rows = checked.rows
        counters = checked.counters
        #: number of steps with committed LCA
        self.steps = counters["lca"]
        #: number of recorded trajectory steps (θ_0…θ_n has n+1 rows)
        self.recorded_steps = counters["trajectory"]
        self.layout = checked.layout
        self._options = checked.options
        # the per-step arrays are small: read once, checked, kept
        self._narrow = {
            name: self._read(name, slice(0, rows))
            for name, rows in self._rows.items()
            if checked.specs[name].row_bytes <= WIDE_ROW_BYTES
        }

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, steps={self.steps}, layers={len(self.layers)})"

    # -- metadata -----------------------------------------------------------------------
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
        """How the run was allocated, as stored: the stored options and the run's facts
        (``validation``, ``eval_subset``'s groups, ``lca_version``)."""
        return dict(self._meta.get("config", {}))

    @property
    def options(self) -> Options:
        """The options the run was recorded with (those a run stores; checked on open)."""
        return self._options

    def has(self, name: str) -> bool:
        return name in self._rows

    # -- arrays -------------------------------------------------------------------------
    def _read(self, name: str, rows: slice) -> np.ndarray:
        """Rows of a stored array, read through the checksums and checked finite."""
        with reading(self.path, f"the array {name!r}"):
            block = np.asarray(self._group[name][rows])
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            bad = int(np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(1))[0])
            raise CorruptRunError(
                f"{self.path}: the array {name!r} holds NaN or infinite values (row "
                f"{rows.start + bad * (rows.step or 1)}); lca never writes them: the run is damaged"
            )
        return block

    def _require(self, name: str) -> None:
        if not self.has(name):
            ask = recorded_by(name)
            raise KeyError(
                f"{self.path} has no {name!r}; stored: {sorted(self._rows)}. "
                + (
                    f"Record the run with {ask} to have it."
                    if ask
                    else "Opt-in arrays (param_lca, grads, theta, per-class, validation) must "
                    "be asked for when the run is recorded."
                )
            )

    def array(self, name: str, steps: slice | None = None) -> np.ndarray:
        """The committed rows of a stored array (optionally a slice of them)."""
        self._require(name)
        rows = self._row_slice(name, steps)
        if name in self._narrow:
            return self._narrow[name][rows]
        if rows.stop <= rows.start:
            return self._empty(name)
        return self._read(name, rows)

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
    def layer_lca_stderr(self) -> np.ndarray:
        """Standard error of each layer's LCA as an estimate of the full evaluation set's,
        (T, n_layers); only runs with ``eval_subset`` have it."""
        return self.array("layer_lca_stderr")

    @property
    def parts(self) -> list[str]:
        """The optimizer parts each step's LCA is split into (``optimizer=``), e.g.
        ``["gradient", "momentum", "weight_decay"]``; empty when it is not split."""
        return list(self.config.get("parts") or [])

    @property
    def part_layer_lca(self) -> np.ndarray:
        """Each optimizer part's LCA by layer, (T, parts, n_layers); the parts of a step
        sum to its ``layer_lca``. Only runs recorded with ``optimizer=`` have it."""
        return self.array("part_layer_lca")

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
        self._require("param_lca")
        if key in {p.name for p in layout.params}:
            names = [key]
        elif key in layout.layers:
            names = [p.name for p in layout.layer_params(key)]
        else:
            raise KeyError(
                f"{self.path} has no parameter or layer named {key!r}; parameters: "
                f"{[p.name for p in layout.params]}, layers: {list(layout.layers)}"
            )
        cols = np.concatenate([np.arange(layout.size)[layout.slice_of(n)] for n in names])
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        rows = self._row_slice("param_lca", steps)
        with reading(self.path, "the array 'param_lca'"):
            arr = self._group["param_lca"]
            block = arr[rows, lo:hi] if hi - lo == len(cols) else arr[rows][:, cols]
        if not np.isfinite(block).all():
            raise CorruptRunError(f"{self.path}: 'param_lca' holds NaN or infinite values")
        if len(names) == 1:
            return block.reshape(len(block), *layout.param(names[0]).shape)
        return block

    def _row_slice(self, name: str, steps: slice | None) -> slice:
        start, stop, step = (steps or slice(None)).indices(self._rows[name])
        return slice(start, max(start, stop), step)

    def iter_array(
        self, name: str, chunk_steps: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream a stored array as (first row, block) pairs: memory stays bounded."""
        self._require(name)
        n = chunk_steps or self._group[name].chunks[0]
        for start in range(0, self._rows[name], n):
            yield start, self.array(name, slice(start, start + n))

    def iter_param_lca(self, chunk_steps: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream per-parameter LCA as (first step, (n, K) block) pairs."""
        return self.iter_array("param_lca", chunk_steps)

    def theta(self, t: int) -> np.ndarray:
        """Recorded parameters θ_t (flat, in the model's dtype)."""
        rows = self._rows.get("theta", 0)
        if not 0 <= t < rows:
            raise IndexError(f"θ_{t} is not recorded; this run has {rows} recorded points")
        return self._read("theta", slice(t, t + 1))[0]

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
            budget=self.options.budget,
            gradient_passes=int(passes) if _count(passes) else None,
            recorded_steps=self.recorded_steps if self.options.record_only else 0,
            lca_seconds=_seconds(self._meta.get("lca_seconds")),
            training_seconds=_seconds(self._meta.get("training_seconds")),
            splits=2 if self.config.get("validation") is True else 1,
            part_layer_lca=self.part_layer_lca if self.has("part_layer_lca") else None,
            resampled=self.design in ("shared", "paired"),
            run_check=self._run_check() if allocated else None,
        )

    @property
    def design(self) -> str | None:
        """How the run's subsets lay along its trajectory: "fixed", "shared", "paired", or
        None for a run on the whole set (the stored config, checked)."""
        subset = self.config.get("eval_subset")
        if not isinstance(subset, dict):
            return None
        resample = subset.get("resample")
        return resample if resample in ("shared", "paired") else "fixed"

    def _run_check(self) -> CheckResult | None:
        """A resampled run's check against the full set (None for other runs, or one
        that stopped before its end was evaluated)."""
        design = self.design
        if design not in ("shared", "paired") or not self.has("lca_stderr"):
            return None
        cov = self.array("lca_cov_prev") if self.has("lca_cov_prev") else None
        return check_result(
            RunCheck.of(self._meta.get("run_check")),
            self.layer_lca.sum(axis=1),
            self.array("lca_stderr"),
            cov,
            design,
            self.options.budget,
            self.drift,
        )


def _seconds(value: Any) -> float | None:
    """A stored duration, if it is one (the store is not trusted)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return float(value) if ok else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open a run store for reading, in any process, with no framework installed.

    Args:
        path: the run directory (the ``store`` a tracker wrote).

    Returns:
        The :class:`Run`; it reads only committed steps.

    Raises:
        NotARunError: ``path`` is not an lca run.
        FormatVersionError: a run written by a newer lca.
        CorruptRunError: a damaged or hostile store (checked before anything is read).
    """
    return Run(path)
