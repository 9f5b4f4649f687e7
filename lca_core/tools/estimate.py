"""``lca estimate``: what tracking a model/data pair would cost, before any training.

It times the evaluations a tracked step makes at the model's current parameters (every
split, by group on a subset; the first call compiles, so it is reported apart) and
multiplies by the points each rule evaluates per step: Simpson two, ``auto`` one where the
trapezoid suffices and two where it does not, the paper's first-order rule one (but no
error control).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..engine.cost import _duration, knobs
from ..engine.evaluator import step_evaluator
from ..protocol import Backend

#: points evaluated per allocated step, fewest and most before refinement (refined steps add
#: n new nodes when n panels double); a point costs a pass per split
POINTS = {"auto": (1, 2), "simpson": (2, 2), "trapezoid": (1, 1), "first_order": (1, 1)}


@dataclass(frozen=True)
class Estimate:
    first_call_seconds: float
    #: one pass over one split (the mean over the splits a step evaluates)
    pass_seconds: float
    examples: int
    steps: int | None
    #: splits a step evaluates (training, and validation where the backend holds it)
    splits: int = 1
    #: a subset's groups: its passes are grouped for the error bars
    groups: int | None = None
    #: with a subset: one pass over the full set, for comparison
    full_pass_seconds: float | None = None

    def table(self) -> str:
        grouped = f" in {self.groups} groups (for the error bars)" if self.groups else ""
        lines = [
            f"one gradient pass over {self.examples} examples{grouped}: "
            f"{self.pass_seconds:.3g} s (the first call, which compiles: "
            f"{self.first_call_seconds:.3g} s)",
        ]
        if self.full_pass_seconds:
            ratio = self.pass_seconds / self.full_pass_seconds
            lines.append(
                f"over the full set: {self.full_pass_seconds:.3g} s, so the subset costs "
                f"{ratio:.2g}× as much"
                + ("" if ratio < 1 else " (its group passes' fixed cost outweighs the saving)")
            )
        if self.splits > 1:
            lines.append(
                "each point is evaluated on the training and the validation set: twice the "
                "passes of the training set alone"
            )
        else:
            lines.append(
                "with a validation set (val_data=, as `lca demo` has) each point is also "
                "evaluated on it: twice these passes"
            )
        lines += [
            "",
            f"{'rule':<12} {'passes/step':<12} {'s/step':<20}"
            + (f"{self.steps} steps" if self.steps else ""),
        ]
        for rule, points in POINTS.items():
            low, high = (n * self.splits for n in points)
            per = (low * self.pass_seconds, high * self.pass_seconds)
            passes = f"{low}" if low == high else f"{low}–{high}"
            seconds = f"{per[0]:.3g}" if low == high else f"{per[0]:.3g}–{per[1]:.3g}"
            total = ""
            if self.steps:
                total = _duration(per[0] * self.steps)
                total += "" if low == high else f"–{_duration(per[1] * self.steps)}"
            lines.append(f"{rule:<12} {passes:<12} {seconds:<20}{total}")
        cut = ", ".join(knobs(self.pass_seconds, subset=self.groups is not None))
        lines += [
            "",
            f"Steps whose residual is above tol add passes (refinement). To cut it: {cut}.",
        ]
        return "\n".join(lines)


def estimate(
    backend: Backend,
    *,
    steps: int | None = None,
    eval_subset: int | float | None = None,
    repeats: int = 3,
) -> Estimate:
    """Time ``repeats`` evaluations of one point as a tracked step makes them (after a
    first, compiling one) at ``backend``'s current parameters; with ``eval_subset``, the
    full set's too, to show what the subset saves. The model is not changed."""
    theta = np.asarray(backend.snapshot().theta, dtype=np.float64)
    validation = "val" in backend.splits
    full = None
    if eval_subset is not None:
        full = statistics.median(_pass_seconds(backend, theta, validation, repeats)[1:])
        backend.use_subset(eval_subset)
    times = _pass_seconds(backend, theta, validation, repeats)
    examples = int(backend.policy().get("eval_samples", 0)) or backend.examples("train") or 0
    subset = backend.subset
    return Estimate(
        times[0],
        statistics.median(times[1:]),
        examples,
        steps,
        2 if validation else 1,
        subset["groups"] if subset else None,
        full,
    )


def _pass_seconds(
    backend: Backend, theta: np.ndarray, validation: bool, repeats: int
) -> list[float]:
    """Seconds per pass (a point's evaluation over its splits), the first call first."""
    evaluate = step_evaluator(backend, validation=validation)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        evaluate.point(theta, None, "the current parameters")
        times.append((time.perf_counter() - started) / len(evaluate.splits))
    return times
