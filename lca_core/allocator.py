"""The allocator: drives a backend over optimizer steps and splits each loss change.

Per step t it computes A[t,i] = Δ_t[i]·ḡ_t[i] with ḡ_t from a quadrature of the gradient
along the straight path θ_t → θ_{t+1}, refined until the residual is within ``tol``. It
composes three parts: the :class:`~lca_core.engine.evaluator.CheckedEvaluator` (trusted
evaluations, counted), :func:`~lca_core.engine.quadrature.integrate` (the rule) and the
:class:`~lca_core.storage.recorder.Recorder` (the run on disk). The gradient at θ_{t+1} is reused
as the start of step t+1, so Simpson costs two new gradient passes per step, not three.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._version import __version__
from .arrays import working_copy
from .contract import check_allocation, resolve_options
from .engine.cost import CostMeter, Forecast
from .engine.evaluator import step_evaluator
from .engine.parts import PARTS, part_deltas
from .engine.quadrature import RunBudget, accepted
from .engine.resampled import RunCheck, resampled_options
from .engine.step import SharedEnds, StepResult, group_allocations, step_result
from .engine.summary import RunningSummary, Summary
from .errors import AccuracyWarning, UnknownOptionError
from .layout import unit_roundoff
from .options import Options
from .protocol import Backend, Evaluation, Snapshot, check_backend
from .storage.recorder import Recorder

#: each step may keep at most this share of the run's budget of its own |ΔL| as residual
BUDGET_SHARE = 0.5
#: residuals within this many units of the parameters' rounding are the losses' own noise
ROUNDING_MARGIN = 64


@dataclass
class _Point:
    """The current point of the trajectory with its evaluations, one per split."""

    snapshot: Snapshot
    theta: Any  # the working copy interpolated from (lca_core.arrays.working_copy)
    evals: dict[str, Evaluation]


class Allocator:
    """Loss Change Allocation over a sequence of parameter snapshots.

    Call :meth:`start` before the first optimizer step and :meth:`advance` after each one
    (the framework integrations do this for you).

    Args:
        backend: what evaluates the loss and its gradient (:class:`~lca_core.Backend`).
        store: the run directory to write (None keeps only the summary in memory).
        options: the common options (:class:`~lca_core.options.Options`); keywords of the
            same names (``rule="auto"``, ``store_params=True``, …) override them.
        validation: also allocate the validation split's loss (the backend must hold one).
        split_by: the optimizer whose update parts :meth:`advance` gets each step (its
            name, recorded with the run): each step's LCA is split into :data:`PARTS`.
        check_determinism: evaluate θ_0 three times and refuse a loss that is not pure.
        determinism_rtol: how far those three evaluations may differ.

    Raises:
        UnknownOptionError: an option that does not exist, or one that belongs to the
            tracker or backend (``val_data``, ``eval_subset``, ``batch_size``, ``progress``).
        ValueError: options that cannot work with this backend (``per_class`` without
            classes, ``record_only`` without a store, a ``tol`` ≤ 0, …).
    """

    def __init__(
        self,
        backend: Backend,
        store: str | os.PathLike[str] | None = None,
        options: Options | None = None,
        *,
        validation: bool = False,
        split_by: str | None = None,
        check_determinism: bool = True,
        determinism_rtol: float = 1e-5,
        **option_values: Any,
    ) -> None:
        check_backend(backend)
        own = Options.names(part="allocator")
        resolve_options(option_values, "Allocator")  # an unknown name, with a suggestion
        elsewhere = sorted(set(option_values) - set(own))
        if elsewhere:
            raise UnknownOptionError(
                f"Allocator does not take {elsewhere}: they are options of the tracker or "
                "the backend (give val_data=, eval_subset=, batch_size= to the backend; "
                f"progress= to a tracker). Its options: {', '.join(own)}"
            )
        options = (options or Options()).with_(**option_values)
        if store is not None:
            options = options.with_(store=store)
        check_allocation(backend, options, validation=validation)
        self.backend, self.layout, self.options = backend, backend.layout, options
        self.check_determinism = check_determinism
        #: a subset's random groups (``eval_subset``): evaluated grouped, for error bars
        self.subset = backend.subset
        #: with ``resample``: how the fresh subsets lie along the trajectory, else None
        self.resample: str | None = (self.subset or {}).get("resample")
        self.options = options = resampled_options(self.resample, options)
        self.evaluate = step_evaluator(
            backend,
            validation=validation,
            per_class=options.per_class,
            determinism_rtol=determinism_rtol,
        )
        #: what the run records of how it is allocated: the stored options and the facts
        self.config = {
            **options.config(),
            "validation": validation,
            "eval_subset": self.subset,
            "lca_version": __version__,
        }
        #: the parts each step's LCA is split into (``optimizer=``), or None
        self.parts: tuple[str, ...] | None = None
        if split_by is not None:
            if options.record_only:
                raise ValueError(
                    "optimizer= splits allocated steps; a record-only run allocates none "
                    "(record the trajectory without optimizer=, or allocate as it trains)"
                )
            self.parts = PARTS
            self.config.update(parts=list(PARTS), optimizer=str(split_by))
        self.running = RunningSummary(
            self.layout.layers,
            options.budget,
            splits=2 if validation else 1,
            resampled=self.resample,
        )
        #: the losses' relative rounding: no residual is refined below it (the acceptance
        #: rule's floor, from the parameters' dtype)
        self.rounding = ROUNDING_MARGIN * unit_roundoff(p.dtype for p in self.layout.params)
        #: judge each step with the run's budget (off in a parallel replay's workers, which
        #: do not know the run before their range: the driver judges their steps again)
        self.guard_budget = True
        self.recorder: Recorder | None = None
        if options.store is not None:
            self.recorder = Recorder(backend, options, self.config)
            self.recorder.restore(self.running)
        self._step = self.recorder.steps if self.recorder is not None else 0
        # a job's processes continue where the writer does
        self._step, self.running = backend.from_writer((self._step, self.running))
        self._point: _Point | None = None
        #: a shared design's last end: its group parts, for the next step's covariance
        self._shared_end: np.ndarray | None = None
        self._drawn: int | None = None  # the draw of the subset the backend evaluates now
        #: with ``resample``: the full set's loss at the run's first point and last
        self.check = RunCheck.of(self.recorder.run_check if self.recorder else None)
        self.check = backend.from_writer(self.check)
        self.cost = CostMeter()
        #: tracked steps the whole run will have, when the trainer knows (for the forecast)
        self.expected_steps: int | None = None

    @property
    def rule(self) -> str:
        return self.options.rule

    @property
    def forecast(self) -> Forecast | None:
        """The cost forecast, made and logged once after the second allocated step."""
        return self.cost.first_forecast

    def _as_snapshot(self, snapshot: Snapshot | np.ndarray | None) -> Snapshot:
        if snapshot is None:
            snapshot = self.backend.snapshot()
        if not isinstance(snapshot, Snapshot):
            snapshot = Snapshot(snapshot if hasattr(snapshot, "shape") else np.asarray(snapshot))
        self.layout.check_vector(snapshot.theta, "the parameter vector")
        return snapshot

    def start(self, snapshot: Snapshot | np.ndarray | None = None) -> float:
        """Evaluate the starting point θ_0 (or the point a resumed run continues from)."""
        with self.cost.measure():
            return self._start(snapshot)

    def _start(self, snapshot: Snapshot | np.ndarray | None) -> float:
        snap = self._as_snapshot(snapshot)
        theta = working_copy(snap.theta)
        evals: dict[str, Evaluation] = {}
        if not self.options.record_only:
            where = f"θ_{self._step}"
            if self.resample is not None:
                self.backend.draw_subset(self._step)
                self._drawn = self._step
                if self.check.first is None:
                    self.check.first = self._full_loss(theta, snap.state, where)
                    if self.recorder is not None:
                        self.recorder.note(run_check=self.check.to_dict())
            evals = self.evaluate.point(
                theta, snap.state, where, check_determinism=self.check_determinism
            )
            val = evals.get("val")
            self.running.start(evals["train"].loss, val.loss if val is not None else None)
        self._point = _Point(snap, theta, evals)
        if self.recorder is not None:
            self.recorder.start(snap.theta, evals or None)
        return evals["train"].loss if evals else float("nan")

    def advance(
        self,
        snapshot: Snapshot | np.ndarray | None = None,
        step_index: int | None = None,
        parts: dict[str, np.ndarray] | None = None,
    ) -> StepResult | None:
        """Allocate the step from the current point to ``snapshot`` (default: the model now);
        in record-only mode store the new point and return None. If the step fails, the
        steps already allocated are committed first: a failure costs only its own step.

        ``parts``: with ``split_by``, the step's update parts but the gradient's
        (``momentum``, ``weight_decay``: flat, float64), from the optimizer's splitter."""
        if (parts is None) != (self.parts is None):
            raise ValueError(
                "advance() takes parts= exactly when the allocator splits by an optimizer "
                "(split_by=)"
            )
        try:
            with self.cost.measure():
                result = self._advance(snapshot, step_index, parts)
        except BaseException:
            if self.recorder is not None:
                self.recorder.flush()
            raise
        if result is not None:
            self.cost.step_done(
                self.gradient_passes,
                self._steps_ahead(),
                rule=self.options.rule,
                subset=self.subset is not None,
                resampled=self.resample is not None,
            )
        return result

    def _steps_ahead(self) -> int | None:
        if self.expected_steps is None:
            return None
        return max(self.expected_steps - self._step, 0)

    def _advance(
        self,
        snapshot: Snapshot | np.ndarray | None,
        step_index: int | None,
        parts: dict[str, np.ndarray] | None = None,
    ) -> StepResult | None:
        if self._point is None:
            raise RuntimeError("call start() before the first optimizer step")
        new = self._as_snapshot(snapshot)
        theta1 = working_copy(new.theta)
        result = None
        if self.options.record_only:
            evals1: dict[str, Evaluation] = {}
        else:
            result, evals1 = self._allocate(new, theta1, step_index, parts)
            self.running.add(result)
        self._point = _Point(new, theta1, evals1)
        if self.recorder is not None:
            self.recorder.append(new.theta, evals1 or None, result)
        self._step += 1
        return result

    def record(
        self, snapshot: Snapshot, evals: dict[str, Evaluation], result: StepResult, passes: int
    ) -> None:
        """Take a step allocated elsewhere (by a worker of a parallel replay, from the
        current point): the running summary and the store continue as if allocated here.

        A worker judges its steps without the run before them (``guard_budget`` off: the
        step against ``tol`` alone); a step that does not meet the rule with the run so far
        is allocated again here, where refining it from scratch reaches the very panels a
        sequential replay would (the nodes are nested), so the run is the same."""
        if self._point is None:
            raise RuntimeError("call start() before recording allocated steps")
        theta = working_copy(snapshot.theta)
        self.evaluate.passes += passes
        if not self._meets(result):
            with self.cost.measure():
                result, evals = self._allocate(snapshot, theta, result.step)
        self.running.add(result)
        self._point = _Point(snapshot, theta, evals)
        if self.recorder is not None:
            self.recorder.append(snapshot.theta, evals, result)
        self._step += 1

    def _meets(self, result: StepResult) -> bool:
        """Whether a step allocated elsewhere meets the acceptance rule here, with the run
        so far (each split's end loss is the one its residual was measured against)."""
        assert self._point is not None
        if self.resample == "shared":  # not judged step by step: the run's check judges it
            return True
        budget = self._budget()
        changes = result.layer_change or {}
        ends = {"train": (result.residual, result.layer_lca)}
        if result.val_residual is not None and result.val_layer_lca is not None:
            ends["val"] = (result.val_residual, result.val_layer_lca)
        for split, (residual, layer_lca) in ends.items():
            start = self._point.evals[split].loss
            end = start + residual + float(np.sum(layer_lca))
            limit = budget.limit(split, start, end, tol=self.options.tol, floor=self.rounding)
            if not accepted(limit, residual, changes.get(split)):
                return False
        return True

    def _budget(self) -> RunBudget:
        """What the run's budget asks of the next step, given the steps so far."""
        return RunBudget(self.options.budget * BUDGET_SHARE, self.running.so_far())

    def _needs_last_check(self) -> bool:
        """A resampled run whose last point's full-set loss is not yet known."""
        point, last = self._point, self.check.last
        evaluated = point is not None and bool(point.evals)
        return self.resample is not None and evaluated and (last is None or last[0] != self._step)

    def _full_loss(self, theta: np.ndarray, state: Any, where: str) -> tuple[int, float]:
        """The whole training set's loss at a point (``resample``'s run check)."""
        return self._step, self.evaluate.loss(theta, state, "full", f"{where} (the full set)")

    def _allocate(
        self,
        new: Snapshot,
        theta1: np.ndarray,
        step_index: int | None,
        parts: dict[str, np.ndarray] | None = None,
    ) -> tuple[StepResult, dict[str, Evaluation]]:
        assert self._point is not None
        prev, opts = self._point, self.options
        if self.resample == "paired" and self._drawn != self._step:
            # this step's own subset, at both of its ends: θ_t evaluated on it again
            self.backend.draw_subset(self._step)
            self._drawn = self._step
            where = f"θ_{self._step} (step {self._step}'s subset)"
            (train,) = self.evaluate([prev.theta], prev.snapshot.state, "train", where)
            prev = _Point(prev.snapshot, prev.theta, {**prev.evals, "train": train})
        elif self.resample == "shared":  # θ_{t+1}'s subset, the end of this step
            self.backend.draw_subset(self._step + 1)
            self._drawn = self._step + 1
        delta = theta1 - prev.theta
        deltas = None if parts is None else part_deltas(delta, parts)
        integral = self.evaluate.path_integral(
            opts.rule,
            prev.evals,
            prev.theta,
            delta,
            theta1,
            prev.snapshot.state,
            self._step,
            tol=opts.tol,
            max_panels=1 if self.resample == "shared" else opts.max_panels,
            parts=group_allocations(self.layout, delta if deltas is None else deltas)
            if self.subset
            else None,
            floor=self.rounding,
            budget=self._budget() if self.guard_budget and self.resample is None else None,
            layers=self.layout.reduce_by_layer,
        )
        evals1, drift = integral.end, 0.0
        if new.state is not None:  # the evaluation depends on state that moved: measure it
            evals1 = self.evaluate.point(theta1, new.state, f"θ_{self._step + 1}")
            drift = evals1["train"].loss - integral.end["train"].loss
        step = self._step if step_index is None else int(step_index)
        shared = None
        if self.resample == "shared":
            assert self.subset is not None
            shared = SharedEnds.of(integral, self.subset, self._shared_end)
            self._shared_end = shared.end
            integral.accepted = True  # judged by the run's check, not step by step
        result = step_result(
            step,
            self.layout,
            delta,
            prev.evals,
            integral,
            evals1["train"].loss,
            drift=drift,
            gradient_passes=self.gradient_passes,
            subset=self.subset,
            deltas=deltas,
            keep_parts=opts.store_params,
            shared=shared,
        )
        return result, evals1

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
        recorded = self._step if self.options.record_only else 0
        return self.running.summary(
            self.gradient_passes,
            recorded,
            self.cost.lca_seconds,
            self.cost.training_seconds,
            check=self.check if self.resample is not None else None,
        )

    def flush(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> Summary:
        """Flush the store and return the summary; with ``strict=True`` raise if the
        cumulative residual is over budget (after the data is safely written). A
        resampled run first evaluates the full set's loss at its last point: the run's
        check."""
        if self._needs_last_check():
            assert self._point is not None
            with self.cost.measure():
                self.check.last = self._full_loss(
                    self._point.theta, self._point.snapshot.state, f"θ_{self._step}"
                )
        summary = self.summary()
        if self.recorder is not None:
            self.recorder.close(
                run_check=self.check.to_dict(),
                gradient_passes=self.gradient_passes,
                lca_seconds=summary.lca_seconds,
                training_seconds=summary.training_seconds,
            )
        if self.options.strict and not self.options.record_only:
            summary.enforce_budget()
        if (warning := summary.accuracy_warning()) is not None:
            warnings.warn(f"LCA: {warning}", AccuracyWarning, stacklevel=3)
        return summary
