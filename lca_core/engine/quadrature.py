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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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
                value = None
                for part, w in ((self.odd, w_odd), (self.even, w_even)):
                    if part is None:
                        continue
                    term = part * (w / w_ends)
                    if value is None:
                        value = term
                    else:
                        value += term
                if value is None:
                    value = self.g0 + self.g1
                else:
                    value += self.g0
                    value += self.g1
                value *= w_ends * scale
                self._value = value
        return self._value

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
    """Σ arrays without a copy for one (the sums are never changed in place), None for none."""
    return functools.reduce(np.add, arrays) if arrays else None


def first_nodes(rule: str) -> list[float]:
    """The nodes a step evaluates first: the rule's interior nodes, then s = 1 (s = 0 is the
    previous step's end)."""
    return [0.5, 1.0] if check_rule(rule) == "simpson" else [1.0]


def path_residual(e0: Evaluation, e1: Evaluation, delta: np.ndarray, g: NestedSum) -> float:
    """ΔL − Δ·ḡ: what the current estimate of the path integral leaves unexplained."""
    # an elementwise product and pairwise sum: no BLAS call (see Layout.reduce_by_layer)
    return float((e1.loss - e0.loss) - g.allocation(delta).sum())


@dataclass
class PathIntegral:
    """The path integral of one step, per evaluation split: the gradient average (and the
    per-class ones, mapped by ``integrate``'s ``parts`` where given), the evaluation at
    θ_{t+1} and the residual of the estimate."""

    grads: dict[str, NestedSum]
    class_grads: dict[str, NestedSum | None]
    end: dict[str, Evaluation]
    residuals: dict[str, float]

    @property
    def panels(self) -> int:
        return next(iter(self.grads.values())).n


#: evaluates the points θ_t + sΔ at the given s, per split
NodeEvaluator = Callable[[Sequence[float]], Mapping[str, list[Evaluation]]]


def integrate(
    rule: str,
    start: Mapping[str, Evaluation],
    delta: np.ndarray,
    evaluate: NodeEvaluator,
    *,
    tol: float,
    max_panels: int,
    parts: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PathIntegral:
    """ḡ along θ_t + sΔ for every split in ``start``, doubling the panels until every
    split's residual is within ``tol`` (or ``max_panels`` is reached).

    ``parts`` maps each node's per-class (or per-group) gradients before they are summed,
    e.g. onto Δ by layer where only those sums are wanted (the sums are linear, so the
    quadrature of the mapped parts is the mapped quadrature). Pure: ``evaluate`` supplies
    the gradients, so the rule is tested without a model.
    """
    if parts is not None:
        evaluate = _mapped_on_arrival(evaluate, parts)
    if rule == "auto":
        first = evaluate([1.0])
        trapezoid = _integral("trapezoid", start, delta, first, parts)
        if max_panels < 2 or max(map(abs, trapezoid.residuals.values())) <= tol:
            return trapezoid
        middle = evaluate([0.5])
        rule, first = "simpson", {s: [*middle[s], *evs] for s, evs in first.items()}
    else:
        first = evaluate(first_nodes(rule))
    integral = _integral(rule, start, delta, first, parts)
    n = initial_panels(rule)
    while refinable(rule) and n < max_panels and max(map(abs, integral.residuals.values())) > tol:
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
    return integral


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
