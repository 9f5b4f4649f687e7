"""What LCA costs, measured as it runs and forecast before it is paid.

The allocator times its own work; the rest of the wall time between its calls is the
training's. After the second allocated step (the first one also compiles and checks
determinism) a forecast is logged: seconds and gradient passes per tracked step, the ratio to
training, the projected total when the number of steps is known, and the knobs that cut it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger("lca")
#: a full-set pass must take at least this long for ``eval_subset`` to pay: a subset pass is
#: 16 group passes (for its error bars), each with the fixed cost of a call (the
#: measurements behind it: benchmarks/README.md)
SUBSET_PAYS_FROM_SECONDS = 0.05


def knobs(
    pass_seconds: float,
    *,
    rule: str | None = None,
    subset: bool = False,
    resampled: bool = False,
) -> tuple[str, ...]:
    """The settings that would cut what tracking costs: those not in use already, and
    ``eval_subset`` only where a pass is long enough for it to pay (``rule=None``: no rule
    chosen yet, as in ``lca estimate``, which shows them all)."""
    found = []
    if not subset and pass_seconds >= SUBSET_PAYS_FROM_SECONDS:
        found.append("eval_subset=0.1 (a tenth of the examples per pass, with error bars)")
    if not resampled:
        found.append(
            "eval_subset=<a training batch>, resample=True (every step for one pass over a "
            "batch: about one training step, with error bars)"
        )
    found.append("every=k (k× fewer tracked steps)")
    if rule in (None, "simpson"):
        found.append("rule='auto' (one pass where the trapezoid suffices)")
    return tuple(found)


@dataclass(frozen=True)
class Forecast:
    """The cost of tracking, per tracked step and (when known) for the steps ahead."""

    seconds_per_step: float
    passes_per_step: float
    training_seconds_per_step: float | None
    steps_ahead: int | None
    #: the settings that would cut the cost (see :func:`knobs`)
    knobs: tuple[str, ...] = ()

    @property
    def ratio(self) -> float | None:
        """LCA time per tracked step ÷ training time per tracked step."""
        t = self.training_seconds_per_step
        return self.seconds_per_step / t if t else None

    def __str__(self) -> str:
        text = (
            f"LCA costs ~{self.seconds_per_step:.3g} s per tracked step "
            f"({self.passes_per_step:.2g} gradient pass{'' if self.passes_per_step == 1 else 'es'})"
        )
        if self.ratio is not None:
            text += f", {self.ratio:.2g}× the training between tracked steps"
        if self.steps_ahead:
            text += f"; about {_duration(self.seconds_per_step * self.steps_ahead)} for the "
            text += f"{self.steps_ahead} tracked steps ahead"
        return text + (f". To cut it: {', '.join(self.knobs)}." if self.knobs else ".")


def announce(forecast: Forecast) -> None:
    """Show the forecast once where a user sees it: on the ``lca`` logger when logging is
    set up to show it, else on standard error (a plain script configures no logging)."""
    if LOG.isEnabledFor(logging.INFO) and LOG.hasHandlers():
        LOG.info("%s", forecast)
    else:
        print(f"lca: {forecast}", file=sys.stderr, flush=True)


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
        #: the run's forecast, made (and logged) once, as soon as two steps are measured
        self.first_forecast: Forecast | None = None

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

    def step_done(
        self,
        passes: int,
        steps_ahead: int | None,
        *,
        rule: str,
        subset: bool = False,
        resampled: bool = False,
    ) -> None:
        """Mark an allocated step; the first time a forecast can be made, make it
        (``first_forecast``: the tracker shows it, :func:`announce`)."""
        self.mark_step(passes)
        if self.first_forecast is None:
            self.first_forecast = self.forecast(
                steps_ahead, rule=rule, subset=subset, resampled=resampled
            )

    @property
    def training_seconds(self) -> float:
        if self._first is None:
            return 0.0
        return max(time.perf_counter() - self._first - self.lca_seconds, 0.0)

    @property
    def ratio(self) -> float | None:
        """LCA's seconds over training's so far (None before any training was timed)."""
        training = self.training_seconds
        return self.lca_seconds / training if training > 0 else None

    def forecast(
        self, steps_ahead: int | None, *, rule: str, subset: bool = False, resampled: bool = False
    ) -> Forecast | None:
        """From the steps after the first (which also compiled and checked determinism);
        ``rule`` and ``subset`` say which settings are in use, for the knobs."""
        if len(self._marks) < 2:
            return None
        (w0, l0, p0), (w1, l1, p1) = self._marks[0], self._marks[-1]
        steps = len(self._marks) - 1
        lca, passes = (l1 - l0) / steps, (p1 - p0) / steps
        training = max((w1 - w0) / steps - lca, 0.0)
        found = knobs(
            lca / passes if passes else 0.0, rule=rule, subset=subset, resampled=resampled
        )
        return Forecast(lca, passes, training or None, steps_ahead, found)
