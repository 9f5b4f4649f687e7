"""The tracker's side of the dashboards: each allocated step's numbers to every sink,
thinned by ``log_every``, and its alerts to the ``lca`` logger, ``on_alert`` and the sinks.

A dashboard is called after the step is in the run's store and summary, and a sink (or
``on_alert``) that raises is reported once and left out for the rest of the run: a slow or
broken dashboard never costs LCA data, and never stops training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..engine.step import StepResult
from .alerts import Alert, Alerts, AlertWatch
from .metrics import Metrics
from .sinks import Sink, sinks_for

LOG = logging.getLogger("lca")


class Dashboard:
    """Sends a run's steps to its sinks and raises its alerts.

    Args:
        log_to: the ``log_to=`` option (one target or a list; see
            :func:`~lca_core.dashboards.sinks.sink_for`).
        layers, parts: the run's layers and optimizer parts (for the names).
        budget: the run's budget (for the ``over_budget`` alert).
        log_every: log every k-th allocated step.
        alerts: an :class:`Alerts`, True for the defaults, False for none.
        on_alert: called with each :class:`Alert`.
    """

    def __init__(
        self,
        log_to: Any,
        *,
        layers: Sequence[str],
        parts: Sequence[str] = (),
        budget: float,
        log_every: int = 1,
        alerts: Alerts | bool = True,
        on_alert: Callable[[Alert], Any] | None = None,
    ) -> None:
        if not isinstance(log_every, int) or isinstance(log_every, bool) or log_every < 1:
            raise ValueError(
                f"log_every is a positive number of allocated steps, not {log_every!r}"
            )
        if on_alert is not None and not callable(on_alert):
            raise TypeError(
                f"on_alert= takes a function of the Alert, not {type(on_alert).__name__}"
            )
        if alerts is True:
            alerts = Alerts()
        if alerts is not False and not isinstance(alerts, Alerts):
            raise TypeError(
                "alerts= takes lca_core.dashboards.Alerts(...), True (the defaults) or False, "
                f"not {type(alerts).__name__}"
            )
        self.sinks: list[Sink] = sinks_for(log_to)
        self.metrics = Metrics(layers, parts)
        self.log_every = log_every
        self.watch = AlertWatch(alerts, layers, budget) if alerts else None
        self.on_alert = on_alert
        self._allocated = 0

    def step(
        self, result: StepResult, budget_used: float, cost_ratio: float | None = None
    ) -> list[Alert]:
        """One allocated step (already stored): its alerts, and its numbers every
        ``log_every``-th step. Returns the alerts raised."""
        self._allocated += 1
        step = result.step + 1  # the optimizer steps taken: the trainer's global step
        alerts = self.watch.check(step, result, budget_used, cost_ratio) if self.watch else []
        for alert in alerts:
            LOG.warning("LCA alert at step %d: %s", alert.step, alert.message)
            if self.on_alert is not None:
                try:
                    self.on_alert(alert)
                except Exception as exc:  # never stop training for it
                    self.on_alert = None
                    self._report("on_alert", exc)
            self._each(lambda sink, alert=alert: sink.alert(alert))
        if self.sinks and self._allocated % self.log_every == 0:
            metrics = self.metrics.of_step(result, budget_used)
            self._each(lambda sink: sink.log(step, metrics))
        return alerts

    def close(self) -> None:
        """Flush every sink (at the run's end)."""
        self._each(lambda sink: sink.flush())

    def _each(self, call: Callable[[Sink], Any]) -> None:
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # a dashboard never stops training
                self.sinks.remove(sink)
                self._report(f"logging to {sink.name}", exc)

    @staticmethod
    def _report(what: str, exc: Exception) -> None:
        LOG.warning(
            "LCA: %s failed (%s: %s), so it is off for the rest of this run. Training and "
            "LCA go on; every step is in the run's store and summary as before.",
            what,
            type(exc).__name__,
            exc,
        )
