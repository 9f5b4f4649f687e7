"""The cumulative error budget |Σ r_t| / |L(θ_T) − L(θ_0)|: always reported, enforced on request."""

from __future__ import annotations

from .errors import BudgetExceededError
from .summary import Summary


def enforce_budget(summary: Summary) -> None:
    """Raise :class:`BudgetExceededError` when the run used more than its budget (callers
    do this after the data is safely written)."""
    if summary.steps and not summary.budget_used <= summary.budget:
        raise BudgetExceededError(
            f"cumulative residual {summary.sum_residual:.3g} is {summary.budget_used:.2%} of "
            f"the loss change {summary.loss_change:.3g}, over the {summary.budget:.2%} budget. "
            "Lower tol, raise max_panels, or use rule='simpson'; the run's data is saved."
        )
