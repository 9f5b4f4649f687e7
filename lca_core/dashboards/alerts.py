"""Alerts: what a run should tell someone while it trains, not after.

A layer hurting step after step, the run over its budget, steps that do not converge, or
LCA costing more than the user allows: each is raised once when it starts (and again only
after it stopped), as a warning on the ``lca`` logger, a call of ``on_alert`` and an event
in the dashboards that have one. The defaults stay quiet on ``lca demo`` (a test holds them
to it): its layers hurt for at most 5 steps in a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.step import StepResult
from ..engine.summary import percent


@dataclass(frozen=True)
class Alert:
    """One alert: its ``kind`` (``layer_hurting``, ``over_budget``, ``unconverged``,
    ``cost``), the optimizer step it was raised at (the trainer's global step), a sentence
    for people, and the layer it is about (``layer_hurting`` only)."""

    kind: str
    step: int
    message: str
    layer: str | None = None


@dataclass(frozen=True)
class Alerts:
    """When to alert (``alerts=Alerts(...)``; ``alerts=False``: never).

    Args:
        hurting_steps: a layer whose LCA is positive (it raised the loss) this many tracked
            steps in a row; None: off.
        unconverged_steps: this many tracked steps in a row that did not meet the
            acceptance rule; None: off.
        over_budget: the run's residual so far over its ``budget`` of |ΔL|.
        cost_ratio: LCA's seconds over training's above this (off by default: LCA of a
            small model costs several training steps by nature; the forecast says how much).
    """

    hurting_steps: int | None = 20
    unconverged_steps: int | None = 3
    over_budget: bool = True
    cost_ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("hurting_steps", "unconverged_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(
                    f"Alerts({name}=...) is a number of steps ≥ 1 or None, not {value!r}"
                )
        if self.cost_ratio is not None and not (
            isinstance(self.cost_ratio, int | float) and self.cost_ratio > 0
        ):
            raise ValueError(
                f"Alerts(cost_ratio=...) is a ratio > 0 or None, not {self.cost_ratio!r}"
            )


class AlertWatch:
    """Follows a run's steps and says which alerts start at each."""

    def __init__(self, rules: Alerts, layers: Sequence[str], budget: float) -> None:
        self.rules, self.layers, self.budget = rules, list(layers), budget
        self._hurting = np.zeros(len(self.layers), dtype=np.int64)  # streak per layer
        self._unconverged = 0
        self._over_budget = self._costly = False

    def check(
        self, step: int, result: StepResult, budget_used: float, cost_ratio: float | None
    ) -> list[Alert]:
        """The alerts that start at this tracked step (``step``: the optimizer step)."""
        rules, out = self.rules, []
        self._hurting = np.where(np.asarray(result.layer_lca) > 0, self._hurting + 1, 0)
        if rules.hurting_steps is not None:
            for j in np.flatnonzero(self._hurting == rules.hurting_steps):
                layer = self.layers[j]
                out.append(
                    Alert(
                        "layer_hurting",
                        step,
                        f"layer {layer} raised the loss on each of the last "
                        f"{rules.hurting_steps} tracked steps (LCA > 0): its updates go uphill "
                        "(a learning rate too high for it, or momentum overshooting)",
                        layer,
                    )
                )
        self._unconverged = 0 if result.converged else self._unconverged + 1
        if self._unconverged == rules.unconverged_steps:
            out.append(
                Alert(
                    "unconverged",
                    step,
                    f"{self._unconverged} tracked steps in a row did not meet the acceptance "
                    "rule within max_panels: lower tol or raise max_panels",
                )
            )
        over = rules.over_budget and math.isfinite(budget_used) and budget_used > self.budget
        if over and not self._over_budget:
            out.append(
                Alert(
                    "over_budget",
                    step,
                    f"the run's residual is {percent(budget_used)} of |ΔL| so far, over its "
                    f"{100 * self.budget:g} % budget: lower tol, raise max_panels or use "
                    "rule='simpson'",
                )
            )
        self._over_budget = over
        costly = rules.cost_ratio is not None and (cost_ratio or 0.0) > rules.cost_ratio
        if costly and not self._costly:
            out.append(
                Alert(
                    "cost",
                    step,
                    f"LCA takes {cost_ratio:.3g}× the training time, over the "
                    f"{rules.cost_ratio:g}× allowed: every=k, eval_subset= or rule='auto' "
                    "cut it (the forecast says by how much)",
                )
            )
        self._costly = costly
        return out
