"""Quadrature rules for the path integral ḡ = ∫₀¹ ∇L(θ + sΔ) ds, with nested nodes.

``n`` counts sub-intervals of [0, 1]: trapezoid uses n ≥ 1, Simpson an even n ≥ 2 (n = 2 is
the paper's "RK4" rule). Doubling n keeps every old node, so refinement only evaluates the
n new odd nodes; :class:`NestedSum` keeps per-group gradient sums so memory stays constant.

``auto`` picks per step: the trapezoid on the two endpoints first (one new gradient pass,
since the start's gradient is known), and only when its residual — known exactly, because
the endpoint losses come with the passes — exceeds ``tol``, Simpson on the same nodes plus
the midpoint, refined as Simpson is. Never more passes than Simpson-first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..arrays import kernels
from ..protocol import Evaluation

RULES: tuple[str, ...] = ("first_order", "trapezoid", "simpson", "auto")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown quadrature rule {rule!r}; choose one of {list(RULES)}")
    return rule


def initial_panels(rule: str) -> int:
    """Sub-intervals a rule starts with: its cheapest form."""
    return {"first_order": 1, "trapezoid": 1, "simpson": 2, "auto": 1}[check_rule(rule)]


def refinable(rule: str) -> bool:
    """first_order is the paper's one-point rule; refining it would make it another rule."""
    return check_rule(rule) != "first_order"


def nodes(rule: str, n: int) -> np.ndarray:
    """Nodes s_j in [0, 1] of ``rule`` with ``n`` sub-intervals."""
    _check_n(rule, n)
    if rule == "first_order":
        return np.zeros(1)
    return np.arange(n + 1) / n


def weights(rule: str, n: int) -> np.ndarray:
    """Weights w_j matching :func:`nodes`; they sum to 1."""
    _check_n(rule, n)
    if rule == "first_order":
        return np.ones(1)
    if rule == "trapezoid":
        w = np.full(n + 1, 2.0)
        w[[0, -1]] = 1.0
        return w / (2 * n)
    w = np.where(np.arange(n + 1) % 2 == 1, 4.0, 2.0)
    w[[0, -1]] = 1.0
    return w / (3 * n)


def refinement_nodes(n: int) -> np.ndarray:
    """The nodes added when n sub-intervals become 2n: the odd multiples of 1/(2n)."""
    return (2 * np.arange(n) + 1) / (2 * n)


def _check_n(rule: str, n: int) -> None:
    if check_rule(rule) == "auto":
        raise ValueError("auto is trapezoid or Simpson, chosen per step; ask for either one")
    if n < 1 or (rule == "simpson" and n % 2) or (rule == "first_order" and n != 1):
        raise ValueError(f"{rule} cannot use {n} sub-intervals")


class NestedSum:
    """Running quadrature over nested node sets, storing only group sums of gradients.

    Works for any array shape (a gradient (K,), per-class gradients (C, K)). Interior
    nodes are split by index parity, which is all Simpson needs; trapezoid adds them up.
    """

    def __init__(self, rule: str, g0: np.ndarray, g1: np.ndarray, interior: list[np.ndarray]):
        self.rule = check_rule(rule)
        self.n = initial_panels(rule)
        self.g0, self.g1 = g0, g1
        # initial interior nodes: simpson has one (s = 1/2, odd index); trapezoid none
        self.odd: np.ndarray | None = _total(interior)
        self.even: np.ndarray | None = None
        self._value: np.ndarray | None = None
        self._allocation: tuple[np.ndarray, np.ndarray] | None = None

    def value(self) -> np.ndarray:
        """The current estimate of ḡ (cached until the next refinement). Summed in one new
        array where it can be (the interior sums weighed relative to the ends, the ends
        added, then scaled): each K-long array made is a page-faulted pass at large K."""
        if self._value is None:
            if self.rule == "first_order":
                self._value = self.g0
            else:  # the weights of ends, odd and even nodes, over the panels
                scale = 1.0 / self.n if self.rule == "trapezoid" else 1.0 / (3 * self.n)
                w_ends, w_odd, w_even = (0.5, 1.0, 1.0) if self.rule == "trapezoid" else (1, 4, 2)
                terms = [
                    (part, w / w_ends)
                    for part, w in ((self.odd, w_odd), (self.even, w_even))
                    if part is not None
                ]
                terms += [(self.g0, 1.0), (self.g1, 1.0)]
                self._value = kernels(self.g0).combine(terms, w_ends * scale)
        return self._value

    def trapezoid_value(self) -> np.ndarray:
        """The trapezoid rule's ḡ on the same nodes (for Simpson: what its error estimate at
        the first level is measured against)."""
        interior = [(p, 1.0) for p in (self.odd, self.even) if p is not None]
        return kernels(self.g0).combine([(self.g0, 0.5), (self.g1, 0.5), *interior], 1 / self.n)

    def allocation(self, delta: np.ndarray) -> np.ndarray:
        """Δ·ḡ elementwise at the current estimate, computed once for the residual and the
        step's allocation alike."""
        if self._allocation is None or self._allocation[0] is not delta:
            self._allocation = (delta, delta * self.value())
        return self._allocation[1]

    def refine(self, new: list[np.ndarray]) -> None:
        """Add the gradients at :func:`refinement_nodes` (self.n) and double n."""
        if len(new) != self.n:
            raise ValueError(f"refining {self.n} sub-intervals needs {self.n} new nodes")
        self.even = _total([p for p in (self.even, self.odd) if p is not None])
        self.odd = _total(new)
        self.n *= 2
        self._value = self._allocation = None


def _total(arrays: list[np.ndarray]) -> np.ndarray | None:
    """Σ arrays without a copy for one (the sums are never changed in place), None for none;
    any array type (numpy's, or a framework's on its device)."""
    return functools.reduce(operator.add, arrays) if arrays else None


def first_nodes(rule: str) -> list[float]:
    """The nodes a step evaluates first: the rule's interior nodes, then s = 1 (s = 0 is the
    previous step's end)."""
    return [0.5, 1.0] if check_rule(rule) == "simpson" else [1.0]


def path_residual(e0: Evaluation, e1: Evaluation, delta: np.ndarray, g: NestedSum) -> float:
    """ΔL − Δ·ḡ: what the current estimate of the path integral leaves unexplained."""
    # an elementwise product and pairwise sum: no BLAS call (see Layout.reduce_by_layer)
    allocation = g.allocation(delta)
    return (e1.loss - e0.loss) - kernels(allocation).total(allocation)


@dataclass
class PathIntegral:
    """The path integral of one step, per evaluation split: the gradient average (and the
    per-class ones, mapped by ``integrate``'s ``parts`` where given), the evaluation at
    θ_{t+1} and the residual of the estimate."""

    grads: dict[str, NestedSum]
    class_grads: dict[str, NestedSum | None]
    end: dict[str, Evaluation]
    residuals: dict[str, float]
    #: whether the acceptance rule was met (False: ``max_panels`` was reached first)
    accepted: bool = False
    #: per split, the estimated error of the per-layer allocations, summed over layers
    #: (from the last refinement, or for Simpson's first estimate from the trapezoid on
    #: its nodes; None where there is none)
    layer_changes: dict[str, float | None] = dataclasses.field(default_factory=dict)
    #: per split, the per-layer sums of Δ⊙ḡ at the final estimate, where the acceptance
    #: rule computed them (the step's result takes them instead of summing again)
    layer_sums: dict[str, np.ndarray] | None = None

    @property
    def panels(self) -> int:
        return next(iter(self.grads.values())).n


#: evaluates the points θ_t + sΔ at the given s, per split
NodeEvaluator = Callable[[Sequence[float]], Mapping[str, list[Evaluation]]]


def step_tolerance(
    start_loss: float,
    end_loss: float,
    *,
    tol: float,
    share: float = 0.0,
    floor: float = 0.0,
    so_far: tuple[float, float] | None = None,
) -> float:
    """The residual a step may keep, in nats (docs/concepts.md, "When a step is accepted").

    ``tol``, or less where the run's budget needs it: given the run so far (``so_far``:
    L(θ_0) and the Σ r of the steps before), what is left of ``share`` (half the budget)
    of |L(θ_{t+1}) − L(θ_0)| once those residuals are paid — but the budget never asks for
    less than the losses' own rounding, ``floor``·max(1, |L|), which no refinement can go
    under (an explicit ``tol`` below it is kept: the step is then refined to max_panels).
    """
    if not share or so_far is None:
        return tol
    first, residual = so_far
    budget = share * abs(end_loss - first) - abs(residual)
    return min(tol, max(budget, floor * max(1.0, abs(start_loss), abs(end_loss))))


def accepted(limit: float, residual: float, layer_change: float | None) -> bool:
    """The rule itself: the residual within ``limit``, and so is the estimated error of
    the per-layer allocations, summed over layers, where there is an estimate — the
    residual alone lets per-layer errors that cancel pass."""
    return abs(residual) <= limit and (layer_change is None or layer_change <= limit)


@dataclass(frozen=True)
class RunBudget:
    """What the run's error budget asks of each step: ``share`` (half the budget) of
    |L(θ_{t+1}) − L(θ_0)|, less what the run so far spent (``so_far``, per split: L(θ_0)
    and the Σ r of the steps before) — see :func:`step_tolerance`."""

    share: float
    so_far: Mapping[str, tuple[float, float]]

    def limit(
        self, split: str, start_loss: float, end_loss: float, *, tol: float, floor: float
    ) -> float:
        return step_tolerance(
            start_loss,
            end_loss,
            tol=tol,
            share=self.share,
            floor=floor,
            so_far=self.so_far.get(split),
        )


def integrate(
    rule: str,
    start: Mapping[str, Evaluation],
    delta: np.ndarray,
    evaluate: NodeEvaluator,
    *,
    tol: float,
    max_panels: int,
    parts: Callable[[np.ndarray], np.ndarray] | None = None,
    floor: float = 0.0,
    budget: RunBudget | None = None,
    layers: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PathIntegral:
    """ḡ along θ_t + sΔ for every split in ``start``, doubling the panels until every split
    meets the acceptance rule (:func:`step_tolerance`, :func:`accepted`) or ``max_panels``
    is reached. ``layers`` maps Δ⊙ḡ to per-layer sums (without it, the residual alone
    decides); ``floor`` is the losses' relative rounding, ``budget`` what the run's budget
    asks (None: ``tol`` alone).

    ``parts`` maps each node's per-class (or per-group) gradients before they are summed,
    e.g. onto Δ by layer where only those sums are wanted (the sums are linear, so the
    quadrature of the mapped parts is the mapped quadrature). Pure: ``evaluate`` supplies
    the gradients, so the rule is tested without a model.
    """
    if parts is not None:
        evaluate = _mapped_on_arrival(evaluate, parts)

    def limit(s: str, integral: PathIntegral) -> float:
        if budget is None:
            return tol
        return budget.limit(s, start[s].loss, integral.end[s].loss, tol=tol, floor=floor)

    def by_layer(integral: PathIntegral) -> dict[str, np.ndarray] | None:
        if layers is None:
            return None
        return {s: layers(g.allocation(delta)) for s, g in integral.grads.items()}

    def judge(
        integral: PathIntegral,
        now: dict[str, np.ndarray] | None,
        before: dict[str, np.ndarray] | None,
        order: int = 0,
    ) -> PathIntegral:
        """Accepted or not, from the per-layer sums ``now`` and a coarser estimate of them,
        ``before``: a refinement of a rule of ``order`` (4: Simpson, 2: trapezoid) leaves
        1/(2^order − 1) of the change it made (Richardson), the finer estimate's error."""
        scale = 1.0 / (2**order - 1) if order else 1.0
        changes: dict[str, float | None] = {s: None for s in integral.grads}
        if now is not None and before is not None:
            for s in integral.grads:
                changes[s] = float(np.abs(now[s] - before[s]).sum()) * scale
        integral.layer_changes, integral.layer_sums = changes, now
        integral.accepted = all(
            accepted(limit(s, integral), integral.residuals[s], changes[s]) for s in integral.grads
        )
        return integral

    def first_estimate(
        integral: PathIntegral, simpson: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Simpson's first estimate has no coarser one of its own: the trapezoid on the same
        nodes stands in, its per-layer allocations moved towards Simpson's by the share of
        the trapezoid's total error that Simpson removed (its residual against the
        trapezoid's: on a cubic, all of it). When the trapezoid's own residual is within the
        losses' rounding, that share cannot be measured and none is assumed removed."""
        assert layers is not None
        out = {}
        for s, g in integral.grads.items():
            trapezoid = layers(delta * g.trapezoid_value())
            r_trapezoid = (integral.end[s].loss - start[s].loss) - float(trapezoid.sum())
            noise = floor * max(1.0, abs(start[s].loss), abs(integral.end[s].loss))
            kept = 1.0
            if abs(r_trapezoid) > noise:
                kept = min(1.0, abs(integral.residuals[s]) / abs(r_trapezoid))
            out[s] = simpson[s] - kept * (simpson[s] - trapezoid)
        return out

    if rule == "auto":
        first = evaluate([1.0])
        trapezoid = judge(_integral("trapezoid", start, delta, first, parts), None, None)
        if max_panels < 2 or trapezoid.accepted:
            return trapezoid
        middle = evaluate([0.5])
        rule, first = "simpson", {s: [*middle[s], *evs] for s, evs in first.items()}
    else:
        first = evaluate(first_nodes(rule))
    integral = _integral(rule, start, delta, first, parts)
    now = by_layer(integral) if rule == "simpson" else None
    judge(integral, now, first_estimate(integral, now) if now is not None else None)
    n = initial_panels(rule)
    while refinable(rule) and n < max_panels and not integral.accepted and _finite(integral):
        before = now if now is not None else by_layer(integral)
        for split, evs in evaluate(refinement_nodes(n).tolist()).items():
            integral.grads[split].refine([e.grad for e in evs])
            if (c := integral.class_grads[split]) is not None:
                c.refine([_interior(e) for e in evs])
        integral.residuals.update(
            {
                s: path_residual(start[s], integral.end[s], delta, g)
                for s, g in integral.grads.items()
            }
        )
        n *= 2
        now = by_layer(integral)
        judge(integral, now, before, order=4 if rule == "simpson" else 2)
    return integral


def _finite(integral: PathIntegral) -> bool:
    """A NaN gradient or loss reaches the residual: refining cannot help (the caller names
    the cause)."""
    return all(math.isfinite(r) for r in integral.residuals.values())


def _integral(
    rule: str,
    start: Mapping[str, Evaluation],
    delta: np.ndarray,
    first: Mapping[str, list[Evaluation]],
    parts: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PathIntegral:
    """The rule's sums over its first nodes (interior ones, then s = 1), per split."""

    end = {split: evs[-1] for split, evs in first.items()}
    grads = {
        s: NestedSum(rule, start[s].grad, evs[-1].grad, [e.grad for e in evs[:-1]])
        for s, evs in first.items()
    }
    class_grads = {
        s: NestedSum(
            rule,
            _part(start[s], parts),
            _part(evs[-1], parts),
            [_interior(e) for e in evs[:-1]],
        )
        if start[s].class_grads is not None
        else None
        for s, evs in first.items()
    }
    residuals = {s: path_residual(start[s], end[s], delta, g) for s, g in grads.items()}
    return PathIntegral(grads, class_grads, end, residuals)


def _part(ev: Evaluation, parts: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """An end point's per-class gradients, mapped by ``parts`` where given (the evaluation
    itself keeps them whole: the next step starts from it)."""
    assert ev.class_grads is not None
    return ev.class_grads if parts is None else parts(ev.class_grads)


def _interior(ev: Evaluation) -> np.ndarray:
    """An interior node's per-class gradients (already mapped on arrival where ``parts``
    is given)."""
    assert ev.class_grads is not None
    return ev.class_grads


def _mapped_on_arrival(
    evaluate: NodeEvaluator, parts: Callable[[np.ndarray], np.ndarray]
) -> NodeEvaluator:
    """``evaluate`` one node at a time, each interior node's per-class gradients mapped by
    ``parts`` before the next node is evaluated: the step then holds its interior nodes'
    parts, not their G × K gradients (s = 1 stays whole for the next step)."""

    def one_by_one(nodes: Sequence[float]) -> dict[str, list[Evaluation]]:
        out: dict[str, list[Evaluation]] = {}
        for s in nodes:
            for split, (ev,) in evaluate([s]).items():
                if s != 1 and ev.class_grads is not None:
                    ev = dataclasses.replace(ev, class_grads=parts(ev.class_grads))
                out.setdefault(split, []).append(ev)
        return out

    return one_by_one
