"""The run on disk as the allocator writes it: schema, rows, resume, record-only.

The allocator hands over evaluations and step results; this module decides what they
become in the store (DESIGN §3), so no integration writes the store itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..arrays import to_host
from ..engine.step import StepResult
from ..engine.summary import RunningSummary
from ..errors import MetadataError
from ..options import Options
from ..protocol import Backend, Evaluation
from .run import open_run
from .store import RunWriter, array_specs, is_run, shared_design

#: the step arrays a resumed run's running summary continues from
SUMMARY_ARRAYS = ("losses", "residuals", "drift", "converged", "layer_lca", "layer_counts")


def json_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The user's metadata as JSON: numpy numbers and arrays and paths are converted;
    anything else that JSON cannot hold is refused now, before the run is created."""

    def convert(value: Any) -> Any:
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(type(value).__name__)

    try:
        return json.loads(json.dumps(dict(metadata), default=convert, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise MetadataError(
            f"metadata cannot be stored as JSON ({exc}); give numbers, strings, lists and "
            "dicts (numpy values and paths are converted)"
        ) from exc


def _check_same_split(stored: Mapping[str, Any], config: Mapping[str, Any], store: Any) -> None:
    """A resumed run continues its optimizer split (``optimizer=``), or its absence: a
    run's steps are split all or none."""
    if bool(stored.get("parts")) != bool(config.get("parts")):
        was = (
            f"with optimizer= ({stored.get('optimizer')})"
            if stored.get("parts")
            else "without optimizer="
        )
        raise ValueError(
            f"{store} was recorded {was}; resume it the same way (every step of a run is "
            "split by the optimizer's parts, or none is)"
        )


class Recorder:
    """Writes one run into ``options.store``: the allocation results per step and, when
    asked (or in a record-only run, alone), the trajectory θ_t. ``config`` is what the run
    records of how it was allocated (the stored options and the facts of the run)."""

    def __init__(self, backend: Backend, options: Options, config: Mapping[str, Any]) -> None:
        if options.store is None:
            raise ValueError("a Recorder needs options.store, the run directory to write")
        store = options.store
        self.record_only = options.record_only
        self.per_class, self.validation = options.per_class, bool(config["validation"])
        self.store_params, self.store_grads = options.store_params, options.store_grads
        self.store_trajectory = options.store_trajectory or options.record_only
        num_classes = backend.num_classes if self.per_class else None
        specs = array_specs(
            backend.layout,
            num_classes=num_classes,
            validation=self.validation,
            store_params=self.store_params,
            store_trajectory=self.store_trajectory,
            store_grads=self.store_grads,
            stderr=config.get("eval_subset") is not None,
            shared=shared_design(config),
            lca=not self.record_only,
            parts=len(config.get("parts") or ()),
        )
        attrs = {
            "config": dict(config),
            "policy": dict(backend.policy()),
            "backend": type(backend).__name__,
            "metadata": json_metadata(options.metadata or {}),
            "num_classes": num_classes,
        }
        mode = "a" if options.resume and is_run(store) else "w"
        if mode == "a":
            # validates and reads the committed rows: never extend a damaged run
            _check_same_split(open_run(store).config, config, store)
        self.writer = RunWriter(
            store, backend.layout, specs, attrs=attrs, mode=mode, overwrite=options.overwrite
        )

    @property
    def steps(self) -> int:
        """Steps the run holds (recorded ones in a record-only run): where it continues."""
        return self.writer.recorded if self.record_only else self.writer.steps

    def restore(self, running: RunningSummary) -> None:
        """Continue ``running`` from a resumed run's committed steps (nothing to do for a
        new run, or one with no allocated step)."""
        if self.record_only or not self.writer.steps:
            return
        names = SUMMARY_ARRAYS + (("val_losses", "val_residuals") if self.validation else ())
        optional = ("part_layer_lca", "lca_stderr", "lca_cov_prev")
        names += tuple(name for name in optional if name in self.writer.specs)
        running.restore({name: self.writer.committed(name) for name in names})

    def start(self, theta: np.ndarray, evals: Mapping[str, Evaluation] | None) -> None:
        """The point the run starts (or resumes) from."""
        if evals is not None:
            self.writer.start("lca", self._point_row(evals))
        if self.store_trajectory:
            self.writer.start("trajectory", {"theta": to_host(theta)})

    def append(
        self,
        theta: np.ndarray,
        evals: Mapping[str, Evaluation] | None = None,
        result: StepResult | None = None,
    ) -> None:
        """One step: its allocation (unless record-only) and the point it ends at."""
        if result is not None and evals is not None:
            self.writer.append("lca", self._step_row(result), self._point_row(evals))
        if self.store_trajectory:
            self.writer.append("trajectory", {}, {"theta": to_host(theta)})

    def _point_row(self, evals: Mapping[str, Evaluation]) -> dict[str, Any]:
        ev = evals["train"]
        row: dict[str, Any] = {"losses": np.float64(ev.loss)}
        if self.per_class:
            row["class_losses"] = ev.class_losses
        if self.validation:
            row["val_losses"] = np.float64(evals["val"].loss)
        if self.store_grads:
            row["grads"] = to_host(ev.grad, np.float32)
        return row

    def _step_row(self, r: StepResult) -> dict[str, Any]:
        row: dict[str, Any] = {
            "step_index": r.step,
            "residuals": r.residual,
            "drift": r.drift,
            "panels": r.panels,
            "converged": r.converged,
            "layer_lca": r.layer_lca,
            "layer_counts": r.layer_counts,
        }
        if self.store_params:
            row["param_lca"] = to_host(r.lca_array, np.float32)  # as stored: half the bytes
        if r.layer_lca_stderr is not None:
            row["layer_lca_stderr"] = r.layer_lca_stderr
            row["lca_stderr"] = r.lca_stderr
        if r.layer_lca_cov_prev is not None:
            row["layer_lca_cov_prev"] = r.layer_lca_cov_prev
            row["lca_cov_prev"] = r.lca_cov_prev
        if r.class_lca_array is not None:  # reduced where it lies
            row["class_layer_lca"] = self.writer.layout.reduce_by_layer(r.class_lca_array)
        if r.val_residual is not None:
            row["val_residuals"] = r.val_residual
            row["val_layer_lca"] = r.val_layer_lca
        split = {
            "part_layer_lca": r.part_layer_lca,
            "part_layer_lca_stderr": r.part_layer_lca_stderr,
            "val_part_layer_lca": r.val_part_layer_lca,
        }
        if r.part_lca_array is not None:  # only with store_params
            split["part_lca"] = to_host(r.part_lca_array, np.float32)
        row.update({k: v for k, v in split.items() if v is not None})
        return row

    def flush(self) -> None:
        self.writer.flush()

    @property
    def run_check(self) -> Any:
        """A resumed resampled run's check so far (from the store, not trusted)."""
        return dict(self.writer.group.attrs["lca"]).get("run_check")

    def note(self, **values: Any) -> None:
        """Record facts of the run with it now (a run that stops early keeps them)."""
        self.writer.update_attrs(**values)

    def close(self, **totals: Any) -> None:
        """Record the run's totals (passes, seconds) with it, then give the run up."""
        self.writer.update_attrs(**totals)
        self.writer.close()
