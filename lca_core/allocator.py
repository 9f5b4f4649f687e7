"""The allocator: drives a backend over optimizer steps and splits each loss change.

Per step t it computes A[t,i] = Δ_t[i]·ḡ_t[i] with ḡ_t from a quadrature of the gradient
along the straight path θ_t → θ_{t+1}, refined until the residual is within ``tol``. It
composes three parts: the :class:`~lca_core.evaluator.CheckedEvaluator` (trusted
evaluations, counted), :func:`~lca_core.quadrature.integrate` (the rule) and the
:class:`~lca_core.recorder.Recorder` (the run on disk). The gradient at θ_{t+1} is reused
as the start of step t+1, so Simpson costs two new gradient passes per step, not three.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._version import __version__
from .budget import enforce_budget
from .contract import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_PANELS,
    DEFAULT_RULE,
    DEFAULT_TOL,
    check_allocation,
)
from .cost import LOG, CostMeter, Forecast
from .errors import NonFiniteError
from .evaluator import all_finite, step_evaluator
from .protocol import Backend, Evaluation, Snapshot
from .quadrature import PathIntegral, integrate
from .recorder import Recorder
from .step import StepResult, group_allocations, step_result
from .summary import RunningSummary, Summary


@dataclass
class _Point:
    """The current point of the trajectory with its evaluations, one per split."""

    snapshot: Snapshot
    theta: np.ndarray  # float64 copy used for interpolation
    evals: dict[str, Evaluation]


class Allocator:
    """Loss Change Allocation over a sequence of parameter snapshots.

    Call :meth:`start` before the first optimizer step and :meth:`advance` after each one
    (the framework integrations do this for you). ``store`` is a directory for the run
    (None keeps only the summary in memory). With ``record_only=True`` it evaluates nothing
    and stores the trajectory θ_t for :func:`lca_core.replay`.
    """

    def __init__(
        self,
        backend: Backend,
        store: str | os.PathLike[str] | None = None,
        *,
        rule: str = DEFAULT_RULE,
        tol: float = DEFAULT_TOL,
        max_panels: int = DEFAULT_MAX_PANELS,
        budget: float = DEFAULT_BUDGET,
        strict: bool = False,
        per_class: bool = False,
        validation: bool = False,
        store_params: bool = False,
        store_grads: bool = False,
        store_trajectory: bool = False,
        record_only: bool = False,
        every: int = 1,
        check_determinism: bool = True,
        determinism_rtol: float = 1e-5,
        metadata: Mapping[str, Any] | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        check_allocation(backend, store, rule, tol, max_panels, per_class, validation, record_only)
        self.backend, self.layout = backend, backend.layout
        self.rule, self.tol, self.max_panels = rule, float(tol), int(max_panels)
        self.record_only, self.strict = record_only, strict
        self.check_determinism = check_determinism
        #: a subset's random groups (``eval_subset``): evaluated grouped, for error bars
        self.subset = getattr(backend, "subset", None)
        self.evaluate = step_evaluator(
            backend, validation=validation, per_class=per_class, determinism_rtol=determinism_rtol
        )
        self.config = {
            "rule": rule,
            "tol": self.tol,
            "max_panels": self.max_panels,
            "budget": budget,
            "per_class": per_class,
            "validation": validation,
            "store_params": store_params,
            "store_grads": store_grads,
            "store_trajectory": store_trajectory or record_only,
            "record_only": record_only,
            "every": int(every),
            "eval_subset": self.subset,
            "lca_version": __version__,
        }
        self.running = RunningSummary(self.layout.layers, budget)
        self.recorder: Recorder | None = None
        if store is not None:
            self.recorder = Recorder(
                store, backend, self.config, metadata=metadata, resume=resume, overwrite=overwrite
            )
            if (committed := self.recorder.committed()) is not None:
                self.running.restore(committed)
        self._step = self.recorder.steps if self.recorder is not None else 0
        if hasattr(backend, "from_writer"):  # a job's processes continue where the writer does
            self._step, self.running = backend.from_writer((self._step, self.running))
        self._point: _Point | None = None
        self.cost = CostMeter()
        #: tracked steps the whole run will have, when the trainer knows (for the forecast)
        self.expected_steps: int | None = None
        #: the cost forecast, logged once after the second allocated step
        self.forecast: Forecast | None = None

    def _as_snapshot(self, snapshot: Snapshot | np.ndarray | None) -> Snapshot:
        if snapshot is None:
            snapshot = self.backend.snapshot()
        if not isinstance(snapshot, Snapshot):
            snapshot = Snapshot(np.asarray(snapshot))
        self.layout.check_vector(np.asarray(snapshot.theta), "the parameter vector")
        return snapshot

    def start(self, snapshot: Snapshot | np.ndarray | None = None) -> float:
        """Evaluate the starting point θ_0 (or the point a resumed run continues from)."""
        with self.cost.measure():
            return self._start(snapshot)

    def _start(self, snapshot: Snapshot | np.ndarray | None) -> float:
        snap = self._as_snapshot(snapshot)
        theta = np.asarray(snap.theta, dtype=np.float64)
        evals: dict[str, Evaluation] = {}
        if not self.record_only:
            where = f"θ_{self._step}"
            evals = self.evaluate.point(
                theta, snap.state, where, check_determinism=self.check_determinism
            )
            self.running.start(evals["train"].loss)
        self._point = _Point(snap, theta, evals)
        if self.recorder is not None:
            self.recorder.start(np.asarray(snap.theta), evals or None)
        return evals["train"].loss if evals else float("nan")

    def advance(
        self, snapshot: Snapshot | np.ndarray | None = None, step_index: int | None = None
    ) -> StepResult | None:
        """Allocate the step from the current point to ``snapshot`` (default: the model now);
        in record-only mode store the new point and return None. If the step fails, the
        steps already allocated are committed first: a failure costs only its own step."""
        try:
            with self.cost.measure():
                result = self._advance(snapshot, step_index)
        except BaseException:
            if self.recorder is not None:
                self.recorder.flush()
            raise
        if result is not None:
            self.cost.mark_step(self.gradient_passes)
            if self.forecast is None:
                self.forecast = self.cost.forecast(
                    self._steps_ahead(), rule=self.rule, subset=self.subset is not None
                )
                if self.forecast is not None:
                    LOG.info("%s", self.forecast)
        return result

    def _steps_ahead(self) -> int | None:
        if self.expected_steps is None:
            return None
        return max(self.expected_steps - self._step, 0)

    def _advance(
        self, snapshot: Snapshot | np.ndarray | None, step_index: int | None
    ) -> StepResult | None:
        if self._point is None:
            raise RuntimeError("call start() before the first optimizer step")
        new = self._as_snapshot(snapshot)
        theta1 = np.asarray(new.theta, dtype=np.float64)
        result = None
        if self.record_only:
            evals1: dict[str, Evaluation] = {}
        else:
            result, evals1 = self._allocate(new, theta1, step_index)
            self.running.add(result)
        self._point = _Point(new, theta1, evals1)
        if self.recorder is not None:
            self.recorder.append(np.asarray(new.theta), evals1 or None, result)
        self._step += 1
        return result

    def record(
        self, snapshot: Snapshot, evals: dict[str, Evaluation], result: StepResult, passes: int
    ) -> None:
        """Take a step allocated elsewhere (by a worker of a parallel replay, from the
        current point): the running summary and the store continue as if allocated here."""
        if self._point is None:
            raise RuntimeError("call start() before recording allocated steps")
        theta = np.asarray(snapshot.theta, dtype=np.float64)
        self.evaluate.passes += passes
        self.running.add(result)
        self._point = _Point(snapshot, theta, evals)
        if self.recorder is not None:
            self.recorder.append(np.asarray(snapshot.theta), evals, result)
        self._step += 1

    def _allocate(
        self, new: Snapshot, theta1: np.ndarray, step_index: int | None
    ) -> tuple[StepResult, dict[str, Evaluation]]:
        assert self._point is not None
        prev = self._point
        delta = theta1 - prev.theta
        where = f"step {self._step}"
        nodes = self.evaluate.along(prev.theta, delta, theta1, prev.snapshot.state, where)
        try:
            integral = integrate(
                self.rule,
                prev.evals,
                delta,
                nodes,
                tol=self.tol,
                max_panels=self.max_panels,
                parts=group_allocations(self.layout, delta) if self.subset else None,
            )
        except Exception as exc:  # a NaN in θ_1 fails its evaluation: name the cause
            if not all_finite(theta1):
                raise self._diverged_step() from exc
            raise
        self._check_finite(integral, theta1, where)
        evals1, drift = integral.end, 0.0
        if new.state is not None:  # the evaluation depends on state that moved: measure it
            evals1 = self.evaluate.point(theta1, new.state, f"θ_{self._step + 1}")
            drift = evals1["train"].loss - integral.end["train"].loss
        step = self._step if step_index is None else int(step_index)
        result = step_result(
            step,
            self.layout,
            delta,
            prev.evals,
            integral,
            evals1["train"].loss,
            drift=drift,
            tol=self.tol,
            gradient_passes=self.gradient_passes,
            subset=self.subset,
        )
        return result, evals1

    def _check_finite(self, integral: PathIntegral, theta1: np.ndarray, where: str) -> None:
        """θ_1 and the gradients along the path, checked through the residual they enter: a
        NaN or an infinity in Δ or in any gradient reaches Σ Δ·ḡ, so a finite residual
        clears them all at the cost of one scalar (θ_1 and ḡ are looked at only when it is
        not). A gradient that enters no residual (the end's under ``first_order``, the
        per-class parts) is checked on its own."""
        for split, grads in integral.grads.items():
            if not math.isfinite(integral.residuals[split]):
                if not all_finite(theta1):
                    raise self._diverged_step()
                if not all_finite(grads.value()):
                    self.evaluate.refuse_non_finite(split, "gradient", where)
            parts = integral.class_grads[split]
            if parts is not None and not all_finite(parts.value()):
                self.evaluate.refuse_non_finite(split, "gradient", where)
            if self.rule == "first_order" and not all_finite(integral.end[split].grad):
                self.evaluate.refuse_non_finite(split, "gradient", f"θ_{self._step + 1}")

    def _diverged_step(self) -> NonFiniteError:
        return NonFiniteError(
            f"the optimizer step {self._step} produced NaN or infinite parameters; "
            "training diverged. Lower the learning rate or clip gradients."
        )

    @property
    def point_evaluations(self) -> dict[str, Evaluation]:
        """The evaluations (one per split) at the current point of the trajectory."""
        if self._point is None:
            raise RuntimeError("no current point: call start() first")
        return self._point.evals

    @property
    def gradient_passes(self) -> int:
        """Gradient passes made so far (one = loss and gradient over one split at one point)."""
        return self.evaluate.passes

    @property
    def steps(self) -> int:
        return self._step

    def summary(self) -> Summary:
        """Loss change vs Σ LCA, budget used, unconverged steps, % helped, per-layer totals."""
        recorded = self._step if self.record_only else 0
        return self.running.summary(
            self.gradient_passes, recorded, self.cost.lca_seconds, self.cost.training_seconds
        )

    def flush(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> Summary:
        """Flush the store and return the summary; with ``strict=True`` raise if the
        cumulative residual is over budget (after the data is safely written)."""
        summary = self.summary()
        if self.recorder is not None:
            self.recorder.close(
                gradient_passes=self.gradient_passes,
                lca_seconds=summary.lca_seconds,
                training_seconds=summary.training_seconds,
            )
        if self.strict and not self.record_only:
            enforce_budget(summary)
        return summary
