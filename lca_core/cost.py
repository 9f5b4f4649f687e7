"""What LCA costs, measured as it runs and forecast before it is paid.

The allocator times its own work; the rest of the wall time between its calls is the
training's. After the second allocated step (the first one also compiles and checks
determinism) a forecast is logged: seconds and gradient passes per tracked step, the ratio to
training, the projected total when the number of steps is known, and the knobs that cut it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger("lca")


@dataclass(frozen=True)
class Forecast:
    """The cost of tracking, per tracked step and (when known) for the steps ahead."""

    seconds_per_step: float
    passes_per_step: float
    training_seconds_per_step: float | None
    steps_ahead: int | None

    @property
    def ratio(self) -> float | None:
        """LCA time per tracked step ÷ training time per tracked step."""
        t = self.training_seconds_per_step
        return self.seconds_per_step / t if t else None

    def __str__(self) -> str:
        text = (
            f"LCA costs ~{self.seconds_per_step:.3g} s per tracked step "
            f"({self.passes_per_step:.2g} gradient passes)"
        )
        if self.ratio is not None:
            text += f", {self.ratio:.2g}× the training between tracked steps"
        if self.steps_ahead:
            text += f"; about {_duration(self.seconds_per_step * self.steps_ahead)} for the "
            text += f"{self.steps_ahead} tracked steps ahead"
        return (
            text + ". To cut it: eval_subset=0.1 (a tenth per pass, with error bars), "
            "every=k (k× fewer steps), rule='auto' (one pass where the trapezoid suffices)."
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class CostMeter:
    """Seconds inside LCA and outside it (training), from the first measured call on."""

    def __init__(self) -> None:
        self.lca_seconds = 0.0
        self._first: float | None = None
        self._marks: list[tuple[float, float, int]] = []  # (wall, lca, passes) per step

    @contextmanager
    def measure(self) -> Iterator[None]:
        started = time.perf_counter()
        if self._first is None:
            self._first = started
        try:
            yield
        finally:
            self.lca_seconds += time.perf_counter() - started

    def mark_step(self, passes: int) -> None:
        self._marks.append((time.perf_counter(), self.lca_seconds, passes))

    @property
    def training_seconds(self) -> float:
        if self._first is None:
            return 0.0
        return max(time.perf_counter() - self._first - self.lca_seconds, 0.0)

    def forecast(self, steps_ahead: int | None) -> Forecast | None:
        """From the steps after the first (which also compiled and checked determinism)."""
        if len(self._marks) < 2:
            return None
        (w0, l0, p0), (w1, l1, p1) = self._marks[0], self._marks[-1]
        steps = len(self._marks) - 1
        lca = (l1 - l0) / steps
        training = max((w1 - w0) / steps - lca, 0.0)
        return Forecast(lca, (p1 - p0) / steps, training or None, steps_ahead)
