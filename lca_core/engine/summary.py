"""The one summary of a run: a typed, frozen record, built by :func:`summarize` alone.

Trackers, callbacks, ``replay`` and :meth:`lca_core.Run.summary` all return it, so a user
reads the same fields in every framework; ``str(summary)`` is the table the CLI prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import BudgetExceededError
from ..layout import shares
from .parts import PARTS
from .resampled import CheckResult, RunCheck, check_result
from .step import StepResult

#: what cuts a resampled run's error when its check finds it inconsistent
RESAMPLED_REMEDY = (
    "Use resample='paired' (refined steps), a larger eval_subset, or smaller steps "
    "(docs/concepts.md, 'Resampled subsets')."
)


def percent(share: float) -> str:
    """A share as a percentage that never rounds a small nonzero share to 0."""
    value = 100 * share
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1e} %"
    return f"{value:.3f} %"


def budget_used(sum_residual: float, loss_change: float) -> float:
    """|Σ r| / |ΔL|: the share of the loss change the allocation leaves unexplained."""
    return abs(sum_residual) / abs(loss_change) if loss_change else float("nan")


@dataclass(frozen=True)
class Summary:
    """What a run found, in plain Python numbers (NaN where the run has no such data).

    A record-only run has ``steps == 0`` and its ``recorded_steps`` (0 for a run that
    allocates as it trains); replay it to fill the rest. ``to_dict()`` gives JSON-ready
    values; ``str()`` a table for people.
    """

    steps: int
    loss_start: float
    loss_end: float
    loss_change: float
    sum_lca: float
    sum_residual: float
    sum_drift: float
    budget: float
    budget_used: float
    unconverged_steps: int
    max_abs_residual: float
    #: shares of parameter-steps (None for a resampled run, whose per-parameter signs are
    #: its subsets' noise)
    pct_helped: float | None
    pct_hurt: float | None
    pct_zero: float | None
    pct_helped_nonzero: float | None
    layers: Mapping[str, float] = field(default_factory=dict)
    #: with ``optimizer=``: Σ LCA of each part of the update (gradient, momentum,
    #: weight_decay), summing to ``sum_lca``
    parts: Mapping[str, float] = field(default_factory=dict)
    gradient_passes: int | None = None
    recorded_steps: int = 0
    #: sets each point is evaluated on: 1, or 2 with a validation set (``val_data``)
    splits: int = 1
    #: wall seconds spent allocating, and training between the allocated steps (measured,
    #: so two summaries of one run compare equal without them)
    lca_seconds: float | None = field(default=None, compare=False)
    training_seconds: float | None = field(default=None, compare=False)
    #: with ``resample``: Σ LCA ± its standard error against the full set's exact ΔL
    #: (then the losses and the budget are the full set's, and the run is judged by it)
    run_check: CheckResult | None = None
    #: whether the run's subsets were resampled (its per-parameter signs are not measured)
    resampled: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", MappingProxyType(dict(self.layers)))
        object.__setattr__(self, "parts", MappingProxyType(dict(self.parts)))

    def to_dict(self) -> dict[str, Any]:
        plain = {"layers": dict(self.layers), "parts": dict(self.parts)}
        if self.run_check is not None:
            plain["run_check"] = self.run_check.to_dict()
        return {f.name: getattr(self, f.name) for f in fields(self)} | plain

    @property
    def over_budget(self) -> bool:
        """Whether the allocation leaves more of |ΔL| unexplained than the budget allows
        (a resampled run: whether its check found Σ LCA inconsistent with ΔL)."""
        if self.run_check is not None:
            return not self.run_check.consistent
        return bool(self.steps and self.loss_change and not self.budget_used <= self.budget)

    def accuracy_warning(self) -> str | None:
        """What is wrong with the run's accuracy, in one sentence (None: nothing)."""
        problems = []
        if self.run_check is not None and self.over_budget:
            problems.append(
                f"{self.run_check}: the subsets' estimate misses the full set's loss change"
            )
        elif self.over_budget:
            problems.append(
                f"the allocation leaves {percent(self.budget_used)} of |ΔL| unexplained, "
                f"over its {100 * self.budget:g} % budget"
            )
        if self.unconverged_steps:
            problems.append(
                f"{self.unconverged_steps} step(s) did not meet the acceptance rule within "
                "max_panels"
            )
        if not problems:
            return None
        if self.run_check is not None:
            return "; ".join(problems) + f". {RESAMPLED_REMEDY}"
        return (
            "; ".join(problems)
            + ". Lower tol or raise max_panels (docs/concepts.md, 'When a step is accepted')."
        )

    def enforce_budget(self) -> None:
        """Raise :class:`~lca_core.errors.BudgetExceededError` when the run used more than
        its budget (``strict=True``: callers do this after the data is safely written); a
        resampled run, when its check is inconsistent."""
        if self.run_check is not None:
            if not self.run_check.consistent:
                raise BudgetExceededError(
                    f"{self.run_check}. {RESAMPLED_REMEDY} The run's data is saved."
                )
            return
        if self.steps and not self.budget_used <= self.budget:
            raise BudgetExceededError(
                f"cumulative residual {self.sum_residual:.3g} is {self.budget_used:.2%} of "
                f"the loss change {self.loss_change:.3g}, over the {self.budget:.2%} budget. "
                "Lower tol, raise max_panels, or use rule='simpson'; the run's data is saved."
            )

    def __getitem__(self, key: str) -> Any:
        """Dict-style access of the 0.1 release; use attributes (``summary.budget_used``)."""
        warnings.warn(
            f"summary[{key!r}] is deprecated; summaries are typed now: use summary.{key}",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()[key]

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, value, what it means) rows, shared by the terminal table and the report."""
        if not self.steps:
            return [
                ("steps allocated", "0", "nothing allocated yet"),
                ("steps recorded", f"{self.recorded_steps}", "replay them: `lca replay RUN`"),
            ]
        rows = [
            ("steps", f"{self.steps}", "optimizer steps whose loss change was allocated"),
            (
                "loss",
                f"{self.loss_start:.4f} → {self.loss_end:.4f}",
                "on the full evaluation set, at the run's ends (the steps saw subsets)"
                if self.resampled
                else "on the evaluation set",
            ),
            ("loss change ΔL", f"{self.loss_change:+.6f}", "negative = the network learned"),
            ("Σ LCA", f"{self.sum_lca:+.6f}", "should equal ΔL"),
            *self._accuracy_rows(),
            (
                "unconverged steps",
                f"{self.unconverged_steps}",
                "steps that did not meet the acceptance rule within max_panels",
            ),
            *self._helped_rows(),
        ]
        if self.parts:
            rows.insert(
                4,
                (
                    "Σ LCA by part",
                    ", ".join(f"{name} {v:+.4g}" for name, v in self.parts.items()),
                    "each term of the optimizer's update: this step's gradient, momentum "
                    "carried from earlier steps, weight decay",
                ),
            )
        if self.sum_drift:
            rows.insert(
                5,
                ("Σ buffer drift", f"{self.sum_drift:+.2e}", "loss change from buffers, not θ"),
            )
        if self.lca_seconds is not None:
            ratio = self.lca_seconds / self.training_seconds if self.training_seconds else None
            rows.append(
                (
                    "time in LCA",
                    f"{self.lca_seconds:.3g} s"
                    + (f" ({ratio:.2g}× the training time)" if ratio is not None else ""),
                    "measured; the forecast shown after the first steps names what cuts it",
                )
            )
        if self.gradient_passes is not None:
            per_step = self.gradient_passes / self.steps
            sets = (
                f"; {per_step / self.splits:.3g} on each of the training and validation sets"
                if self.splits > 1
                else ""
            )
            rows.append(
                (
                    "gradient passes",
                    f"{self.gradient_passes} ({per_step:.3g} per step{sets})",
                    "over the evaluation set (or its eval_subset): the cost of LCA",
                )
            )
        return rows

    def _accuracy_rows(self) -> list[tuple[str, str, str]]:
        """What says the allocation is right: the residual and the budget, or a resampled
        run's check against the full set."""
        if self.resampled:
            check = str(self.run_check) if self.run_check is not None else "not yet made"
            why = "Σ LCA on resampled subsets (± 1 standard error) vs the full set's ΔL"
            return [("run check", check, why)]
        return [
            ("Σ residual", f"{self.sum_residual:+.2e}", "ΔL − Σ LCA: the integration error"),
            self._budget_row(),
        ]

    def _helped_rows(self) -> list[tuple[str, str, str]]:
        if self.pct_helped is None:
            return [
                (
                    "helped / hurt / zero",
                    "not measured",
                    "a resampled step's per-parameter signs are noise (docs/concepts.md)",
                )
            ]
        return [
            (
                "helped / hurt / zero",
                f"{self.pct_helped:.2f} % / {self.pct_hurt:.2f} % / {self.pct_zero:.2f} %",
                "of parameter-steps; the paper finds ~50–58 % helping over long runs "
                "(short runs help more: docs/reproduction.md)",
            ),
            (
                "helped, zeros ignored",
                f"{self.pct_helped_nonzero:.2f} %",
                "among parameters that moved the loss",
            ),
        ]

    def __repr__(self) -> str:
        """One line a person can read (``str()`` is the whole table)."""
        if not self.steps:
            return f"Summary(steps=0, recorded_steps={self.recorded_steps})"
        layers = ", ".join(f"{name!r}: {v:+.4g}" for name, v in self.layers.items())
        helped = "None" if self.pct_helped is None else f"{self.pct_helped:.1f}"
        return (
            f"Summary(steps={self.steps}, loss_change={self.loss_change:+.6g}, "
            f"sum_lca={self.sum_lca:+.6g}, budget_used={percent(self.budget_used)}, "
            f"unconverged_steps={self.unconverged_steps}, pct_helped={helped}, "
            f"layers={{{layers}}})"
        )

    def _budget_row(self) -> tuple[str, str, str]:
        if not self.loss_change:  # |Σ r| / |ΔL| has no meaning: say what is known
            return (
                "budget used",
                f"undefined: ΔL = 0 (Σ residual {self.sum_residual:+.2e})",
                "the loss did not change, so no share of it can be unexplained",
            )
        return (
            "budget used",
            f"{percent(self.budget_used)} of |ΔL| (budget {100 * self.budget:g} %)",
            "under the budget = the allocation is trustworthy",
        )

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _, _ in rows)
        value_width = max(len(v) for _, v, _ in rows)
        lines = [f"{k:<{width}}  {v:<{value_width}}  {why}" for k, v, why in rows]
        if (warning := self.accuracy_warning()) is not None:
            lines.insert(0, f"WARNING: {warning}")
        if self.layers:
            lines.append("LCA per layer (negative = the layer helped):")
            layer_width = max(len(name) for name in self.layers)
            lines += [f"  {name:<{layer_width}}  {v:+.6f}" for name, v in self.layers.items()]
        return "\n".join(lines)


def summarize(
    *,
    losses: np.ndarray,
    layer_lca: np.ndarray,
    residuals: np.ndarray,
    drift: np.ndarray,
    converged: np.ndarray,
    layer_counts: np.ndarray,
    layers: list[str] | tuple[str, ...],
    budget: float,
    gradient_passes: int | None = None,
    recorded_steps: int = 0,
    lca_seconds: float | None = None,
    training_seconds: float | None = None,
    splits: int = 1,
    part_layer_lca: np.ndarray | None = None,
    resampled: bool = False,
    run_check: CheckResult | None = None,
) -> Summary:
    """The summary from the always-stored arrays (shared by runs and live allocators);
    ``part_layer_lca`` (…, parts, layers) where the run is split by its optimizer; a
    resampled run's losses and budget from its check against the full set."""
    steps = len(residuals)
    losses = np.asarray(losses, dtype=np.float64)
    if run_check is not None:
        losses = np.array([run_check.loss_start, run_check.loss_end])
    loss_change = float(losses[-1] - losses[0]) if len(losses) else float("nan")
    sum_residual = float(np.sum(residuals))
    helped, hurt, zero, helped_nonzero = shares(layer_counts)
    if resampled:
        helped = hurt = zero = helped_nonzero = None
    totals = np.asarray(layer_lca, dtype=np.float64).reshape(-1, len(layers)).sum(axis=0)
    if run_check is not None:  # the budget's share: what Σ LCA leaves of the full set's ΔL
        sum_residual = run_check.loss_change - run_check.sum_lca - run_check.sum_drift
    return Summary(
        steps=steps,
        loss_start=float(losses[0]) if len(losses) else float("nan"),
        loss_end=float(losses[-1]) if len(losses) else float("nan"),
        loss_change=loss_change if steps else float("nan"),
        sum_lca=float(totals.sum()) if steps else float("nan"),
        sum_residual=sum_residual if steps else float("nan"),
        sum_drift=float(np.sum(drift)),
        budget=float(budget),
        budget_used=budget_used(sum_residual, loss_change) if steps else float("nan"),
        unconverged_steps=int((~np.asarray(converged, dtype=bool)).sum()),
        max_abs_residual=float(np.abs(residuals).max()) if steps else float("nan"),
        pct_helped=helped,
        pct_hurt=hurt,
        pct_zero=zero,
        pct_helped_nonzero=helped_nonzero,
        layers={name: float(v) for name, v in zip(layers, totals, strict=True)} if steps else {},
        parts=_part_totals(part_layer_lca) if steps else {},
        gradient_passes=gradient_passes,
        recorded_steps=recorded_steps,
        lca_seconds=lca_seconds,
        training_seconds=training_seconds,
        splits=splits,
        run_check=run_check,
        resampled=resampled,
    )


def _part_totals(part_layer_lca: np.ndarray | None) -> dict[str, float]:
    if part_layer_lca is None:
        return {}
    arr = np.asarray(part_layer_lca, dtype=np.float64)
    totals = arr.reshape(-1, len(PARTS), arr.shape[-1]).sum(axis=(0, 2))
    return {name: float(v) for name, v in zip(PARTS, totals, strict=True)}


class RunningSummary:
    """The summary of a run as it is allocated: per-step scalars and per-layer totals only,
    so memory does not grow with K; a resumed run continues from its committed rows."""

    def __init__(
        self,
        layers: tuple[str, ...] | list[str],
        budget: float,
        splits: int = 1,
        resampled: str | None = None,
    ) -> None:
        self.layers, self.budget, self.splits = list(layers), float(budget), splits
        #: with ``resample``: its design, and each step's Σ LCA, standard error and
        #: covariance with the step before (scalars: what the run's check sums)
        self.resampled = resampled
        self.step_lca: list[float] = []
        self.lca_stderr: list[float] = []
        self.lca_cov_prev: list[float] = []
        self.losses: list[float] = []
        self.residuals: list[float] = []
        self.drift: list[float] = []
        self.converged: list[bool] = []
        self.layer_lca = np.zeros(len(self.layers))
        self.layer_counts = np.zeros((len(self.layers), 3), dtype=np.int64)
        #: the validation split's L(θ_0) and Σ residual (for the acceptance rule)
        self.val_first: float | None = None
        self.val_residual = 0.0
        #: with ``optimizer=``: Σ part_layer_lca so far, (parts, layers)
        self.part_layer_lca: np.ndarray | None = None

    def start(self, loss: float, val_loss: float | None = None) -> None:
        self.losses.append(loss)
        if self.val_first is None:
            self.val_first = val_loss

    def so_far(self) -> dict[str, tuple[float, float]]:
        """Per split, L(θ_0) and the Σ residual of the steps so far: what the acceptance
        rule measures the run's budget against."""
        out = {"train": (self.losses[0], float(np.sum(self.residuals)))} if self.losses else {}
        if self.val_first is not None:
            out["val"] = (self.val_first, self.val_residual)
        return out

    def budget_used(self) -> float:
        """|Σ r| / |ΔL| of the run so far (NaN before its first step, and for a resampled
        run, which is judged against the full set only at its end)."""
        if len(self.losses) < 2 or self.resampled is not None:
            return float("nan")
        return budget_used(float(np.sum(self.residuals)), self.losses[-1] - self.losses[0])

    def add(self, r: StepResult) -> None:
        self.losses.append(r.loss_after)
        self.residuals.append(r.residual)
        self.drift.append(r.drift)
        self.converged.append(r.converged)
        self.layer_lca += r.layer_lca
        self.layer_counts += r.layer_counts
        if self.resampled is not None:
            self.step_lca.append(float(np.sum(r.layer_lca)))
            self.lca_stderr.append(float(r.lca_stderr or 0.0))
            self.lca_cov_prev.append(float(r.lca_cov_prev or 0.0))
        if r.val_residual is not None:
            self.val_residual += r.val_residual
        if r.part_layer_lca is not None:
            if self.part_layer_lca is None:
                self.part_layer_lca = np.zeros_like(r.part_layer_lca)
            self.part_layer_lca += r.part_layer_lca

    def restore(self, committed: Mapping[str, np.ndarray]) -> None:
        """Continue from a resumed run's committed steps (its last point is re-evaluated)."""
        steps = len(committed["residuals"])
        self.losses = list(committed["losses"][:steps])
        for name in ("residuals", "drift", "converged"):
            setattr(self, name, list(committed[name]))
        self.layer_lca = committed["layer_lca"].sum(axis=0)
        self.layer_counts = committed["layer_counts"].sum(axis=0)
        if "val_losses" in committed:
            self.val_first = float(committed["val_losses"][0])
            self.val_residual = float(committed["val_residuals"].sum())
        if "part_layer_lca" in committed:
            self.part_layer_lca = committed["part_layer_lca"].sum(axis=0)
        if self.resampled is not None:
            self.step_lca = list(committed["layer_lca"].sum(axis=1))
            self.lca_stderr = list(committed["lca_stderr"])
            cov = committed.get("lca_cov_prev")
            self.lca_cov_prev = list(cov) if cov is not None else [0.0] * steps

    def summary(
        self,
        gradient_passes: int | None = None,
        recorded_steps: int = 0,
        lca_seconds: float | None = None,
        training_seconds: float | None = None,
        check: RunCheck | None = None,
    ) -> Summary:
        run_check = None
        if check is not None and self.resampled is not None:
            run_check = check_result(
                check,
                self.step_lca,
                self.lca_stderr,
                self.lca_cov_prev,
                self.resampled,
                self.budget,
                self.drift,
            )
        return summarize(
            losses=np.asarray(self.losses),
            layer_lca=self.layer_lca[None],
            residuals=np.asarray(self.residuals),
            drift=np.asarray(self.drift),
            converged=np.asarray(self.converged, dtype=bool),
            layer_counts=self.layer_counts[None],
            layers=self.layers,
            budget=self.budget,
            gradient_passes=gradient_passes,
            recorded_steps=recorded_steps,
            lca_seconds=lca_seconds,
            training_seconds=training_seconds,
            splits=self.splits,
            part_layer_lca=self.part_layer_lca,
            resampled=self.resampled is not None,
            run_check=run_check,
        )
