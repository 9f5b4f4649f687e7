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
#: the same on a subset resampled at every point (``resample=``): the shared design
#: evaluates each point once; the paired one each step's start again on its own subset
RESAMPLED = {"resample=True": (1, 1), "resample='paired'": (2, 3)}


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
    #: one training step's seconds, when known: each setting's cost as a ratio to it
    train_step_seconds: float | None = None
    #: the ratio to training a setting must stay within to be named as reaching it
    target_ratio: float = 2.0

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
        ratio = "× training" if self.train_step_seconds else ""
        lines += [
            "",
            f"{'rule':<19} {'passes/step':<12} {'s/step':<20} {ratio:<12}"
            + (f"{self.steps} steps" if self.steps else ""),
        ]
        settings = {**POINTS, **(RESAMPLED if self.groups else {})}
        reaching = []
        for rule, points in settings.items():
            low, high = (n * self.splits for n in points)
            if rule in RESAMPLED:  # the validation set is whole: evaluated once per point
                low, high = low + self.splits - 1, high + self.splits - 1
            per = (low * self.pass_seconds, high * self.pass_seconds)
            passes = f"{low}" if low == high else f"{low}–{high}"
            seconds = f"{per[0]:.3g}" if low == high else f"{per[0]:.3g}–{per[1]:.3g}"
            times = ""
            if self.train_step_seconds:
                # tracked ÷ untracked: the step itself plus what LCA adds to it
                low_ratio, high_ratio = (1 + p / self.train_step_seconds for p in per)
                times = f"{low_ratio:.3g}" + ("" if low == high else f"–{high_ratio:.3g}")
                if high_ratio <= self.target_ratio:
                    reaching.append(rule)
            total = ""
            if self.steps:
                total = _duration(per[0] * self.steps)
                total += "" if low == high else f"–{_duration(per[1] * self.steps)}"
            lines.append(f"{rule:<19} {passes:<12} {seconds:<20} {times:<12}{total}")
        if self.train_step_seconds:
            within = ", ".join(reaching) if reaching else "none of these; a smaller eval_subset"
            lines.append(f"within {self.target_ratio:g}× the training (every step): {within}")
        cut = ", ".join(
            knobs(
                self.pass_seconds, subset=self.groups is not None, resampled=self.groups is not None
            )
        )
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
    train_step_seconds: float | None = None,
    target_ratio: float = 2.0,
) -> Estimate:
    """Time ``repeats`` evaluations of one point as a tracked step makes them (after a
    first, compiling one) at ``backend``'s current parameters; with ``eval_subset``, the
    full set's too, to show what the subset saves, and the resampled designs' cost. With
    ``train_step_seconds`` (one training step's), each setting's ratio to training and
    those within ``target_ratio``. The model is not changed."""
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
        train_step_seconds,
        target_ratio,
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
