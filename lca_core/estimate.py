"""``lca estimate``: what tracking a model/data pair would cost, before any training.

It times full-set gradient passes at the model's current parameters (the first call
compiles, so it is reported apart) and multiplies by the passes each rule makes per step:
Simpson two, ``auto`` one where the trapezoid suffices and two where it does not, the
paper's first-order rule one (but no error control).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from .cost import _duration
from .protocol import Backend

#: gradient passes per allocated step, fewest and most before refinement (refined steps add
#: n new nodes when n panels double)
PASSES = {"auto": (1, 2), "simpson": (2, 2), "trapezoid": (1, 1), "first_order": (1, 1)}


@dataclass(frozen=True)
class Estimate:
    first_call_seconds: float
    pass_seconds: float
    examples: int
    steps: int | None

    def table(self) -> str:
        lines = [
            f"one gradient pass over {self.examples} examples: {self.pass_seconds:.3g} s "
            f"(the first call, which compiles: {self.first_call_seconds:.3g} s)",
            "",
            f"{'rule':<12} {'passes/step':<12} {'s/step':<14}"
            + (f"{self.steps} steps" if self.steps else ""),
        ]
        for rule, (low, high) in PASSES.items():
            per = (low * self.pass_seconds, high * self.pass_seconds)
            passes = f"{low}" if low == high else f"{low}–{high}"
            seconds = f"{per[0]:.3g}" if low == high else f"{per[0]:.3g}–{per[1]:.3g}"
            total = ""
            if self.steps:
                total = _duration(per[0] * self.steps)
                total += "" if low == high else f"–{_duration(per[1] * self.steps)}"
            lines.append(f"{rule:<12} {passes:<12} {seconds:<14}{total}")
        lines += [
            "",
            "Steps whose residual is above tol add passes (refinement). To cut the cost: "
            "eval_subset=n (n examples per pass, with error bars), every=k (k× fewer "
            "steps), rule='auto'.",
        ]
        return "\n".join(lines)


def estimate(
    backend: Backend,
    *,
    steps: int | None = None,
    eval_subset: int | float | None = None,
    repeats: int = 3,
) -> Estimate:
    """Time ``repeats`` full-set gradient passes of ``backend`` (after a first, compiling
    one) at its current parameters; the model is not changed."""
    if eval_subset is not None:
        backend.use_subset(eval_subset)  # type: ignore[attr-defined]
    theta = np.asarray(backend.snapshot().theta, dtype=np.float64)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        backend.evaluate([theta])
        times.append(time.perf_counter() - started)
    sets = getattr(backend, "sets", {})
    examples = int(backend.policy().get("eval_samples", 0)) or _length(sets.get("train"))
    return Estimate(times[0], statistics.median(times[1:]), examples, steps)


def _length(train: object) -> int:
    try:
        return len(train[0])  # type: ignore[index]
    except (TypeError, IndexError):
        return 0
