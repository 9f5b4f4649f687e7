"""Resampled subsets (``eval_subset=n, resample=...``): what their design asks of the
options, and the run's check against the full set's loss at its ends.

Each step's LCA on a subset drawn by lca is an unbiased estimate of the full set's, so
Σ LCA over the run estimates L(θ_T) − L(θ_0) of the *full* set, which is evaluated
exactly at the run's first and last points: the run is consistent when the two agree
within the sum's standard error (or within the budget, where the error bars are tighter
than the quadrature's own error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import Options
from .uncertainty import sum_stderr

#: how many standard errors Σ LCA may lie from the full set's ΔL and still be consistent
#: (3: a false alarm in 0.3 % of runs with honest error bars)
CONSISTENT_Z = 3.0


def resampled_options(design: str | None, options: Options) -> Options:
    """The options as a resampled design runs them, refusing what it cannot do before any
    pass: the shared design evaluates each point once, on its own subset, so every step
    is a trapezoid on its two ends (the rule recorded as such), whatever ``rule`` says."""
    if design is None:
        return options
    if options.rule == "first_order":
        raise ValueError(
            "resample= needs a rule over both ends of a step; first_order uses the start "
            "alone (use rule='trapezoid', or leave the rule to the design)"
        )
    if options.record_only:
        raise ValueError("resample= allocates as it trains; a record-only run evaluates nothing")
    return options.with_(rule="trapezoid") if design == "shared" else options


@dataclass
class RunCheck:
    """The full set's loss at the run's first point and its last: (point, loss) each."""

    first: tuple[int, float] | None = None
    last: tuple[int, float] | None = None

    @classmethod
    def of(cls, stored: Any) -> RunCheck:
        """From a run's attributes (not trusted: anything malformed is no check)."""

        def point(value: Any) -> tuple[int, float] | None:
            ok = isinstance(value, list | tuple) and len(value) == 2
            if not ok or not isinstance(value[0], int) or isinstance(value[0], bool):
                return None
            if not isinstance(value[1], int | float) or not math.isfinite(value[1]):
                return None
            return int(value[0]), float(value[1])

        if not isinstance(stored, dict):
            return cls()
        return cls(point(stored.get("first")), point(stored.get("last")))

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last}

    @property
    def steps(self) -> tuple[int, int] | None:
        """The steps the check spans, [first, last), once both ends are known."""
        if self.first is None or self.last is None:
            return None
        return self.first[0], self.last[0]

    @property
    def loss_change(self) -> float:
        if self.first is None or self.last is None:
            return float("nan")
        return self.last[1] - self.first[1]


@dataclass(frozen=True)
class CheckResult:
    """The run's check: Σ LCA ± its standard error against the full set's exact ΔL."""

    loss_start: float
    loss_end: float
    loss_change: float
    sum_lca: float
    stderr: float
    budget: float
    #: the loss change the evaluation state's drift made (BatchNorm's running statistics
    #: with ``bn_policy="running"``), estimated on the subsets too: ΔL = Σ LCA + Σ drift
    sum_drift: float = 0.0

    @property
    def z(self) -> float:
        """(Σ LCA + Σ drift − ΔL) in standard errors."""
        diff = self.sum_lca + self.sum_drift - self.loss_change
        return diff / self.stderr if self.stderr > 0 else (0.0 if diff == 0 else math.inf)

    @property
    def consistent(self) -> bool:
        """Within CONSISTENT_Z standard errors, or within the run's budget of |ΔL|."""
        diff = abs(self.sum_lca + self.sum_drift - self.loss_change)
        return abs(self.z) <= CONSISTENT_Z or diff <= self.budget * abs(self.loss_change)

    def __str__(self) -> str:
        verdict = "consistent" if self.consistent else f"inconsistent ({self.z:+.1f} SE)"
        drift = f" + drift {self.sum_drift:+.4g}" if self.sum_drift else ""
        return (
            f"Σ LCA {self.sum_lca:+.4g}{drift} ± {self.stderr:.2g} vs ΔL "
            f"{self.loss_change:+.4g} (full set): {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss_start": self.loss_start,
            "loss_end": self.loss_end,
            "loss_change": self.loss_change,
            "sum_lca": self.sum_lca,
            "stderr": self.stderr,
            "sum_drift": self.sum_drift,
            "z": self.z,
            "consistent": self.consistent,
        }


def check_result(
    check: RunCheck,
    step_lca: Any,
    stderr: Any,
    cov_prev: Any,
    design: str,
    budget: float,
    drift: Any = None,
) -> CheckResult | None:
    """The run's check from each step's Σ LCA, its standard error and (shared design)
    its covariance with the step before, and its drift, over the steps the check spans
    (None until both ends are known). The drift's own sampling error is not in the
    standard error."""
    span = check.steps
    if span is None or check.first is None or check.last is None:
        return None
    lo, hi = span
    window = slice(lo, hi)
    se = np.asarray(stderr, dtype=np.float64)[window]
    cov = None if cov_prev is None else np.asarray(cov_prev, dtype=np.float64)[window]
    return CheckResult(
        loss_start=check.first[1],
        loss_end=check.last[1],
        loss_change=check.loss_change,
        sum_lca=float(np.sum(np.asarray(step_lca, dtype=np.float64)[window])),
        stderr=float(sum_stderr(se, design, cov)) if len(se) else 0.0,
        budget=budget,
        sum_drift=0.0 if drift is None else float(np.sum(np.asarray(drift)[window])),
    )
