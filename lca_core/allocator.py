"""The allocator: drives a backend over optimizer steps and splits each loss change.

Per step t it computes A[t,i] = Δ_t[i]·ḡ_t[i] with ḡ_t from a quadrature of the gradient
along the straight path θ_t → θ_{t+1}, refines until the residual is within ``tol``, and
streams the results to a run store. The gradient at θ_{t+1} is kept and reused as the
start of step t+1, so Simpson costs two new gradient passes per step, not three.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._version import __version__
from .budget import Budget
from .contract import DEFAULT_BUDGET, DEFAULT_MAX_PANELS, DEFAULT_RULE, DEFAULT_TOL
from .errors import LayoutMismatchError, NondeterministicLossError, NonFiniteError
from .protocol import Backend, Evaluation, Snapshot
from .quadrature import NestedSum, check_rule, initial_panels, refinable, refinement_nodes
from .run import open_run
from .store import RunWriter, array_specs
from .summary import Summary, shares, summarize


@dataclass
class StepResult:
    """What one allocated step produced (the per-parameter LCA is float64, length K)."""

    step: int
    loss_before: float
    loss_after: float
    lca: np.ndarray
    residual: float
    drift: float
    panels: int
    converged: bool
    gradient_passes: int
    layer_lca: np.ndarray
    layer_counts: np.ndarray  # (n_layers, 3): parameters that helped / hurt / were zero
    class_lca: np.ndarray | None = None
    val_residual: float | None = None
    val_layer_lca: np.ndarray | None = None

    @property
    def pct_helped(self) -> float:
        return shares(self.layer_counts)[0]


@dataclass
class _Point:
    """A point of the trajectory with its evaluations, one per evaluation split."""

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
        check_rule(rule)
        if tol <= 0 or max_panels < initial_panels(rule):
            raise ValueError(
                f"tol must be > 0 and max_panels ≥ {initial_panels(rule)} for {rule}; "
                f"got tol={tol}, max_panels={max_panels}"
            )
        if per_class and not backend.num_classes:
            raise ValueError(
                "per_class=True needs a backend that knows the classes of its evaluation set "
                "(give it labelled classification data)"
            )
        if validation and "val" not in backend.splits:
            raise ValueError("validation=True needs a backend built with validation data")
        if record_only and store is None:
            raise ValueError("record_only=True needs a store directory to record θ_t into")
        self.record_only = record_only
        store_trajectory = store_trajectory or record_only
        self.backend = backend
        self.layout = backend.layout
        self.rule, self.tol, self.max_panels = rule, float(tol), int(max_panels)
        self.per_class, self.store_params = per_class, store_params
        self.store_grads, self.store_trajectory = store_grads, store_trajectory
        self.splits = ("train", "val") if validation else ("train",)
        self.check_determinism = check_determinism
        self.determinism_rtol = determinism_rtol
        self.budget = Budget(budget, strict=strict)
        #: gradient passes made so far (one pass = loss+gradient over one split at one point)
        self.gradient_passes = 0
        self._point: _Point | None = None
        self._step = 0
        self._history: dict[str, list[Any]] = {
            "losses": [],
            "residuals": [],
            "drift": [],
            "converged": [],
        }
        n_layers = len(self.layout.layers)
        self._layer_total = np.zeros(n_layers)
        self._counts_total = np.zeros((n_layers, 3), dtype=np.int64)
        self._layer_sizes = self.layout.reduce_by_layer(np.ones(self.layout.size, dtype=np.int64))
        self.config = {
            "rule": rule,
            "tol": self.tol,
            "max_panels": self.max_panels,
            "budget": budget,
            "per_class": per_class,
            "validation": validation,
            "store_params": store_params,
            "store_grads": store_grads,
            "store_trajectory": store_trajectory,
            "record_only": record_only,
            "every": int(every),
            "lca_version": __version__,
        }
        self.writer: RunWriter | None = None
        if store is not None:
            self._open_store(store, metadata or {}, resume, overwrite)

    # -- store ----------------------------------------------------------------------------
    def _open_store(
        self,
        store: str | os.PathLike[str],
        metadata: Mapping[str, Any],
        resume: bool,
        overwrite: bool,
    ) -> None:
        specs = array_specs(
            self.layout,
            num_classes=self.backend.num_classes if self.per_class else None,
            validation="val" in self.splits,
            store_params=self.store_params,
            store_trajectory=self.store_trajectory,
            store_grads=self.store_grads,
            lca=not self.record_only,
        )
        attrs = {
            "config": self.config,
            "policy": dict(self.backend.policy()),
            "backend": type(self.backend).__name__,
            "metadata": dict(metadata),
            "num_classes": self.backend.num_classes if self.per_class else None,
        }
        can_resume = resume and os.path.isdir(store) and any(os.scandir(store))
        if can_resume and not self.record_only:
            self._load_history(store)
        self.writer = RunWriter(
            store,
            self.layout,
            specs,
            attrs=attrs,
            mode="a" if can_resume else "w",
            overwrite=overwrite,
        )
        self._step = self.writer.recorded if self.record_only else self.writer.steps

    def _load_history(self, store: str | os.PathLike[str]) -> None:
        """Continue the running summary of a resumed run from what it has committed."""
        run = open_run(store)
        if not run.steps:  # e.g. a recorded trajectory that is replayed for the first time
            return
        self._history["losses"] = list(run.losses[: run.steps])  # θ_T is re-evaluated
        self._history["residuals"] = list(run.residuals)
        self._history["drift"] = list(run.drift)
        self._history["converged"] = list(run.converged)
        self._layer_total = run.layer_lca.sum(axis=0)
        self._counts_total = run.layer_counts.sum(axis=0)
        self.budget.restore(float(np.sum(self._history["residuals"])))

    # -- evaluation -----------------------------------------------------------------------
    def _evaluate(
        self, thetas: Sequence[np.ndarray], state: Any, split: str, where: str
    ) -> list[Evaluation]:
        evals = self.backend.evaluate(
            list(thetas), state=state, split=split, per_class=self.per_class
        )
        self.gradient_passes += len(thetas)
        for ev in evals:
            grad = np.asarray(ev.grad)
            if grad.shape != (self.layout.size,):
                raise LayoutMismatchError(
                    f"the backend returned a gradient of shape {grad.shape} for {where}; the "
                    f"layout has {self.layout.size} parameters"
                )
            if not np.isfinite(ev.loss) or not np.all(np.isfinite(grad)):
                what = "loss" if not np.isfinite(ev.loss) else "gradient"
                raise NonFiniteError(
                    f"the {split} {what} is NaN or infinite at {where}: training has diverged "
                    "or the loss takes log(0). Lower the learning rate, clip gradients, or "
                    "use a numerically stable loss (e.g. cross-entropy on logits)."
                )
        return evals

    def _evaluate_point(self, theta: np.ndarray, state: Any, where: str) -> dict[str, Evaluation]:
        return {s: self._evaluate([theta], state, s, where)[0] for s in self.splits}

    def _as_snapshot(self, snapshot: Snapshot | np.ndarray | None) -> Snapshot:
        if snapshot is None:
            snapshot = self.backend.snapshot()
        if not isinstance(snapshot, Snapshot):
            snapshot = Snapshot(np.asarray(snapshot))
        self.layout.check_vector(np.asarray(snapshot.theta), "the parameter vector")
        return snapshot

    def _deterministic_start(self, theta: np.ndarray, state: Any, where: str) -> Evaluation:
        """Evaluate θ three times — twice in one call (a backend that restores the RNG
        state between calls cannot hide a stochastic loss) and once alone (nor can one that
        vectorises a call's points) — and refuse a loss that is not pure."""
        first, again = self._evaluate([theta, theta], state, "train", f"{where} (twice)")
        (alone,) = self._evaluate([theta], state, "train", f"{where} (again)")
        rtol = self.determinism_rtol
        for other in (again, alone):
            loss_ok = abs(other.loss - first.loss) <= rtol * max(abs(first.loss), 1e-12)
            scale = np.linalg.norm(first.grad)
            grad_ok = np.linalg.norm(other.grad - first.grad) <= rtol * max(scale, 1e-12)
            if not (loss_ok and grad_ok):
                raise NondeterministicLossError(
                    "evaluating the loss several times at the same parameters gave different "
                    f"results (loss {first.loss!r} vs {other.loss!r}); LCA needs the loss to "
                    "be a pure function of the parameters. Usual causes: dropout left on, "
                    "BatchNorm in train mode updating running statistics, data augmentation, "
                    "an evaluation set that is shuffled, or a host callback. Evaluate with "
                    "dropout off, no augmentation and a fixed, unshuffled evaluation set."
                )
        return first

    # -- the steps ------------------------------------------------------------------------
    def start(self, snapshot: Snapshot | np.ndarray | None = None) -> float:
        """Evaluate the starting point θ_0 (or the point a resumed run continues from)."""
        snap = self._as_snapshot(snapshot)
        if self.record_only:
            assert self.writer is not None
            self._point = _Point(snap, np.asarray(snap.theta), {})
            self.writer.start("trajectory", {"theta": np.asarray(snap.theta)})
            return float("nan")
        theta = np.asarray(snap.theta, dtype=np.float64)
        where = f"θ_{self._step}"
        if self.check_determinism:
            evals = {"train": self._deterministic_start(theta, snap.state, where)}
            evals.update(
                {
                    s: self._evaluate([theta], snap.state, s, where)[0]
                    for s in self.splits
                    if s != "train"
                }
            )
        else:
            evals = self._evaluate_point(theta, snap.state, where)
        self._point = _Point(snap, theta, evals)
        self._history["losses"].append(evals["train"].loss)
        if self.writer is not None:
            self.writer.start("lca", self._point_row(self._point))
            if self.store_trajectory:
                self.writer.start("trajectory", {"theta": np.asarray(snap.theta)})
        return evals["train"].loss

    def advance(
        self, snapshot: Snapshot | np.ndarray | None = None, step_index: int | None = None
    ) -> StepResult | None:
        """Allocate the step from the current point to ``snapshot`` (default: the model now);
        in record-only mode store the new point and return None."""
        if self._point is None:
            raise RuntimeError("call start() before the first optimizer step")
        new = self._as_snapshot(snapshot)
        if self.record_only:
            assert self.writer is not None
            self.writer.append("trajectory", {}, {"theta": np.asarray(new.theta)})
            self._point = _Point(new, np.asarray(new.theta), {})
            self._step += 1
            return None
        prev = self._point
        theta1 = np.asarray(new.theta, dtype=np.float64)
        delta = theta1 - prev.theta
        where = f"step {self._step}"
        if not np.all(np.isfinite(theta1)):
            raise NonFiniteError(
                f"the optimizer step {self._step} produced NaN or infinite parameters; "
                "training diverged. Lower the learning rate or clip gradients."
            )
        sums, end_evals, panels = self._integrate(prev, theta1, delta, where)
        if new.state is not None:  # the evaluation depends on state that moved: measure it
            evals1 = self._evaluate_point(theta1, new.state, f"θ_{self._step + 1}")
            drift = evals1["train"].loss - end_evals["train"].loss
        else:
            evals1, drift = end_evals, 0.0
        result = self._finish_step(prev, delta, sums, end_evals, evals1, panels, drift, step_index)
        self._point = _Point(new, theta1, evals1)
        if self.writer is not None:
            self._write(result, self._point)
        self._step += 1
        return result

    def _integrate(
        self, prev: _Point, theta1: np.ndarray, delta: np.ndarray, where: str
    ) -> tuple[dict[str, tuple[NestedSum, NestedSum | None]], dict[str, Evaluation], int]:
        """Quadrature along θ_t + sΔ, refined until every split's residual is within tol."""
        interior = [0.5] if self.rule == "simpson" else []
        points = [prev.theta + s * delta for s in interior] + [theta1]
        sums: dict[str, tuple[NestedSum, NestedSum | None]] = {}
        end_evals: dict[str, Evaluation] = {}
        state = prev.snapshot.state
        for split in self.splits:
            evs = self._evaluate(points, state, split, where)
            e0, e1 = prev.evals[split], evs[-1]
            end_evals[split] = e1
            g = NestedSum(self.rule, e0.grad, e1.grad, [e.grad for e in evs[:-1]])
            c = None
            if self.per_class:
                c = NestedSum(
                    self.rule, e0.class_grads, e1.class_grads, [e.class_grads for e in evs[:-1]]
                )
            sums[split] = (g, c)
        while refinable(self.rule) and sums["train"][0].n < self.max_panels:
            worst = max(
                abs(self._residual(prev.evals[s], end_evals[s], delta, sums[s][0]))
                for s in self.splits
            )
            if worst <= self.tol:
                break
            n = sums["train"][0].n
            points = [prev.theta + s * delta for s in refinement_nodes(n)]
            for split in self.splits:
                evs = self._evaluate(points, state, split, where)
                g, c = sums[split]
                g.refine([e.grad for e in evs])
                if c is not None:
                    c.refine([e.class_grads for e in evs])
        return sums, end_evals, sums["train"][0].n

    @staticmethod
    def _residual(e0: Evaluation, e1: Evaluation, delta: np.ndarray, g: NestedSum) -> float:
        # an elementwise product and pairwise sum: no BLAS call (see Layout.reduce_by_layer)
        return float((e1.loss - e0.loss) - (delta * g.value()).sum())

    def _finish_step(
        self,
        prev: _Point,
        delta: np.ndarray,
        sums: dict[str, tuple[NestedSum, NestedSum | None]],
        end_evals: dict[str, Evaluation],
        evals1: dict[str, Evaluation],
        panels: int,
        drift: float,
        step_index: int | None,
    ) -> StepResult:
        g, c = sums["train"]
        lca = delta * g.value()
        e0, e1 = prev.evals["train"], end_evals["train"]
        residual = float((e1.loss - e0.loss) - lca.sum())
        val_residual = val_layer_lca = None
        if "val" in self.splits:
            val_g = sums["val"][0]
            val_residual = self._residual(prev.evals["val"], end_evals["val"], delta, val_g)
            val_layer_lca = self.layout.reduce_by_layer(delta * val_g.value())
        converged = max(abs(residual), abs(val_residual or 0.0)) <= self.tol
        # one reduction for the sums and both sign counts (counts are exact in float64)
        layer_lca, helped, hurt = self.layout.reduce_by_layer(np.stack([lca, lca < 0, lca > 0]))
        helped, hurt = helped.astype(np.int64), hurt.astype(np.int64)
        counts = np.stack([helped, hurt, self._layer_sizes - helped - hurt], axis=-1)
        class_lca = delta * c.value() if c is not None else None
        self.budget.add(residual)
        h = self._history
        h["losses"].append(evals1["train"].loss)
        h["residuals"].append(residual)
        h["drift"].append(drift)
        h["converged"].append(converged)
        self._layer_total += layer_lca
        self._counts_total += counts
        return StepResult(
            step=self._step if step_index is None else int(step_index),
            loss_before=e0.loss,
            loss_after=evals1["train"].loss,
            lca=lca,
            residual=residual,
            drift=drift,
            panels=panels,
            converged=converged,
            gradient_passes=self.gradient_passes,
            layer_lca=layer_lca,
            layer_counts=counts,
            class_lca=class_lca,
            val_residual=val_residual,
            val_layer_lca=val_layer_lca,
        )

    def _point_row(self, point: _Point) -> dict[str, np.ndarray]:
        ev = point.evals["train"]
        row: dict[str, np.ndarray] = {"losses": np.float64(ev.loss)}
        if self.per_class:
            row["class_losses"] = ev.class_losses
        if "val" in self.splits:
            row["val_losses"] = np.float64(point.evals["val"].loss)
        if self.store_grads:
            row["grads"] = ev.grad
        return row

    def _write(self, r: StepResult, point: _Point) -> None:
        assert self.writer is not None
        step_row: dict[str, Any] = {
            "step_index": r.step,
            "residuals": r.residual,
            "drift": r.drift,
            "panels": r.panels,
            "converged": r.converged,
            "layer_lca": r.layer_lca,
            "layer_counts": r.layer_counts,
        }
        if self.store_params:
            step_row["param_lca"] = r.lca
        if r.class_lca is not None:
            step_row["class_layer_lca"] = self.layout.reduce_by_layer(r.class_lca)
        if r.val_residual is not None:
            step_row["val_residuals"] = r.val_residual
            step_row["val_layer_lca"] = r.val_layer_lca
        self.writer.append("lca", step_row, self._point_row(point))
        if self.store_trajectory:
            self.writer.append("trajectory", {}, {"theta": np.asarray(point.snapshot.theta)})

    # -- results --------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._step

    def summary(self) -> Summary:
        """Loss change vs Σ LCA, budget used, unconverged steps, % helped, per-layer totals."""
        h = self._history
        return summarize(
            losses=np.asarray(h["losses"]),
            layer_lca=self._layer_total[None],
            residuals=np.asarray(h["residuals"]),
            drift=np.asarray(h["drift"]),
            converged=np.asarray(h["converged"], dtype=bool),
            layer_counts=self._counts_total[None],
            layers=list(self.layout.layers),
            budget=self.budget.limit,
            gradient_passes=self.gradient_passes,
            recorded_steps=self._step if self.record_only else 0,
        )

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> Summary:
        """Flush the store and return the summary; with ``strict=True`` raise if the
        cumulative residual is over budget (after the data is safely written)."""
        summary = self.summary()
        if self.writer is not None:
            self.writer.update_attrs(gradient_passes=self.gradient_passes)
            self.writer.close()
        if not self.record_only:
            self.budget.check(summary.loss_change)
        return summary
