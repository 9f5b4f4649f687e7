"""The cumulative error budget |Σ r_t| / |L(θ_T) − L(θ_0)|: always reported, enforced on request."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BudgetExceededError
from .summary import budget_used


@dataclass
class Budget:
    """Tracks Σ r_t; ``strict`` turns an overrun into :class:`BudgetExceededError` at close."""

    limit: float = 0.01
    strict: bool = False
    residual_sum: float = 0.0

    def add(self, residual: float) -> None:
        self.residual_sum += residual

    def restore(self, residual_sum: float) -> None:
        self.residual_sum = residual_sum

    def used(self, loss_change: float) -> float:
        return budget_used(self.residual_sum, loss_change)

    def check(self, loss_change: float) -> None:
        used = self.used(loss_change)
        if self.strict and not used <= self.limit:
            raise BudgetExceededError(
                f"cumulative residual {self.residual_sum:.3g} is {used:.2%} of the loss change "
                f"{loss_change:.3g}, over the {self.limit:.2%} budget. Lower tol, raise "
                "max_panels, or use rule='simpson'; the run's data is saved."
            )
