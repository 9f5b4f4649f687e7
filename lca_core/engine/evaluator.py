"""Checked evaluation: what the allocator trusts a backend's answer with.

Every evaluation is checked for the gradient's length and a finite loss, a point's gradient
for finite values (the gradients along a step are checked by the allocator, through the
residual they enter), the first point for determinism (a loss that changes between calls
cannot be allocated), and every pass is counted, so results say what they cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from ..arrays import kernels
from ..errors import (
    EvaluationDataError,
    LayoutMismatchError,
    LCAError,
    NondeterministicLossError,
    NonFiniteError,
)
from ..protocol import Backend, Evaluation
from .quadrature import NodeEvaluator, PathIntegral, integrate


class CheckedEvaluator:
    """A backend's evaluations over the chosen splits, checked and counted. ``per_class``
    groups the training split's passes (by class, or by a subset's random groups): only its
    parts are allocated, so the validation split is always evaluated whole."""

    def __init__(
        self,
        backend: Backend,
        splits: tuple[str, ...],
        *,
        per_class: bool = False,
        determinism_rtol: float = 1e-5,
    ) -> None:
        self.backend, self.splits, self.per_class = backend, splits, per_class
        self.size = backend.layout.size
        self.determinism_rtol = determinism_rtol
        #: gradient passes made so far (one pass = loss+gradient over one split at one point)
        self.passes = 0
        self._started = False  # a non-finite loss before any step is not divergence

    def __call__(
        self,
        thetas: Sequence[np.ndarray],
        state: Any,
        split: str,
        where: str,
        *,
        check_grads: bool = True,
    ) -> list[Evaluation]:
        """The evaluations at ``thetas``; ``check_grads=False`` leaves the gradients'
        finiteness to the caller (a path integral's residual is finite only if every
        gradient in it is: one scalar instead of a pass over each gradient)."""
        try:
            evals = self.backend.evaluate(
                list(thetas),
                state=state,
                split=split,
                per_class=self.per_class and split == "train",
            )
        except LCAError:
            raise
        except Exception as exc:
            if self._started:  # the data worked at θ_0: this is the user's code failing
                raise
            raise EvaluationDataError(
                f"evaluating the {split} loss at the starting point {where} failed "
                f"({type(exc).__name__}: {exc}): the loss does not fit the evaluation data. "
                "Check that the labels are within the model's classes and that inputs and "
                "targets are shaped as in training."
            ) from exc
        self.passes += len(thetas)
        for ev in evals:
            grad = ev.grad
            if tuple(grad.shape) != (self.size,):
                raise LayoutMismatchError(
                    f"the backend returned a gradient of shape {tuple(grad.shape)} for "
                    f"{where}; the layout has {self.size} parameters"
                )
            if not math.isfinite(ev.loss):
                self.refuse_non_finite(split, "loss", where)
            if check_grads and not all_finite(grad):
                self.refuse_non_finite(split, "gradient", where)
        return evals

    def loss(self, theta: np.ndarray, state: Any, split: str, where: str) -> float:
        """The loss alone at ``theta`` (a forward pass where the backend can), checked
        finite and counted as a pass."""
        loss = float(self.backend.evaluate_loss(theta, state=state, split=split))
        self.passes += 1
        if not math.isfinite(loss):
            self.refuse_non_finite(split, "loss", where)
        return loss

    def refuse_non_finite(self, split: str, what: str, where: str) -> NoReturn:
        """The error for a NaN or infinite loss or gradient: the data does not fit the loss
        at the start, training has diverged after it."""
        if not self._started:
            raise NonFiniteError(
                f"the {split} {what} is NaN or infinite at the starting point {where}, "
                "before any training step: the loss does not fit the evaluation data. "
                "Check that the labels are within the model's classes, that the loss "
                "takes logits (or probabilities) as the model returns them, and that "
                "the inputs are finite."
            )
        raise NonFiniteError(
            f"the {split} {what} is NaN or infinite at {where}: training has diverged "
            "or the loss takes log(0). Lower the learning rate, clip gradients, or "
            "use a numerically stable loss (e.g. cross-entropy on logits)."
        )

    def point(
        self, theta: np.ndarray, state: Any, where: str, *, check_determinism: bool = False
    ) -> dict[str, Evaluation]:
        """Every split at one point; optionally proving the evaluation-set loss deterministic."""
        if check_determinism:
            train = self._deterministic(theta, state, where)
        else:
            (train,) = self([theta], state, "train", where)
        others = {s: self([theta], state, s, where)[0] for s in self.splits if s != "train"}
        self._started = True
        return {"train": train, **others}

    def along(
        self, theta0: np.ndarray, delta: np.ndarray, theta1: np.ndarray, state: Any, where: str
    ) -> NodeEvaluator:
        """The points θ_0 + sΔ as the integrator asks for them, every split (θ_1 itself at
        s = 1: the next step starts from exactly that point). Their gradients are left
        unchecked: the caller checks the residual they enter."""

        def evaluate(nodes: Sequence[float]) -> dict[str, list[Evaluation]]:
            points = [theta1 if s == 1 else _point(theta0, s, delta) for s in nodes]
            return {
                split: self(points, state, split, where, check_grads=False) for split in self.splits
            }

        return evaluate

    def path_integral(
        self,
        rule: str,
        start: Mapping[str, Evaluation],
        theta0: np.ndarray,
        delta: np.ndarray,
        theta1: np.ndarray,
        state: Any,
        step: int,
        *,
        tol: float,
        max_panels: int,
        parts: Callable[[np.ndarray], np.ndarray] | None = None,
        **acceptance: Any,
    ) -> PathIntegral:
        """The step θ_0 → θ_1 = θ_0 + Δ's integral of the gradient (:func:`integrate`),
        checked: a step whose parameters are NaN or infinite is named as divergence, a
        non-finite gradient along it as such. ``acceptance``: :func:`integrate`'s
        ``floor``, ``budget`` and ``layers``."""
        where = f"step {step}"
        nodes = self.along(theta0, delta, theta1, state, where)
        try:
            integral = integrate(
                rule,
                dict(start),
                delta,
                nodes,
                tol=tol,
                max_panels=max_panels,
                parts=parts,
                **acceptance,
            )
        except Exception as exc:  # a NaN in θ_1 fails its evaluation: name the cause
            if not all_finite(theta1):
                raise diverged(step) from exc
            raise
        self._check_path(integral, theta1, rule, step)
        return integral

    def _check_path(self, integral: PathIntegral, theta1: np.ndarray, rule: str, step: int) -> None:
        """θ_1 and the gradients along the path, checked through the residual they enter: a
        NaN or an infinity in Δ or in any gradient reaches Σ Δ·ḡ, so a finite residual
        clears them all at the cost of one scalar (θ_1 and ḡ are looked at only when it is
        not). A gradient that enters no residual (the end's under ``first_order``, the
        per-class parts) is checked on its own."""
        where = f"step {step}"
        for split, grads in integral.grads.items():
            if not math.isfinite(integral.residuals[split]):
                if not all_finite(theta1):
                    raise diverged(step)
                if not all_finite(grads.value()):
                    self.refuse_non_finite(split, "gradient", where)
            parts = integral.class_grads[split]
            if parts is not None and not all_finite(parts.value()):
                self.refuse_non_finite(split, "gradient", where)
            if rule == "first_order" and not all_finite(integral.end[split].grad):
                self.refuse_non_finite(split, "gradient", f"θ_{step + 1}")

    def _deterministic(self, theta: np.ndarray, state: Any, where: str) -> Evaluation:
        """Evaluate θ three times — twice in one call (a backend that restores the RNG
        state between calls cannot hide a stochastic loss) and once alone (nor can one that
        vectorises a call's points) — and refuse a loss that is not pure."""
        first, again = self([theta, theta], state, "train", f"{where} (twice)")
        (alone,) = self([theta], state, "train", f"{where} (again)")
        rtol = self.determinism_rtol
        for other in (again, alone):
            loss_ok = abs(other.loss - first.loss) <= rtol * max(abs(first.loss), 1e-12)
            ops = kernels(first.grad)
            scale = ops.norm(first.grad)
            grad_ok = ops.norm(other.grad - first.grad) <= rtol * max(scale, 1e-12)
            if not (loss_ok and grad_ok):
                raise NondeterministicLossError(
                    "evaluating the loss several times at the same parameters gave different "
                    f"results (loss {first.loss!r} vs {other.loss!r}); LCA needs the loss to "
                    "be a pure function of the parameters. Usual causes: dropout left on, "
                    "BatchNorm in train mode updating running statistics, data augmentation, "
                    "an evaluation set that is shuffled, or a host callback. Evaluate with "
                    "dropout off, no augmentation and a fixed, unshuffled evaluation set."
                )
        return first


def _point(theta0: Any, s: float, delta: Any) -> Any:
    """θ_0 + sΔ in one new array, where θ lies."""
    return kernels(delta).node(theta0, s, delta)


def diverged(step: int) -> NonFiniteError:
    """The error for an optimizer step that made the parameters NaN or infinite."""
    return NonFiniteError(
        f"the optimizer step {step} produced NaN or infinite parameters; "
        "training diverged. Lower the learning rate or clip gradients."
    )


def all_finite(values: Any) -> bool:
    """No NaN or infinity in ``values`` (:meth:`~lca_core.arrays.Kernels.all_finite`)."""
    return kernels(values).all_finite(values)


def step_evaluator(
    backend: Backend, *, validation: bool, per_class: bool = False, determinism_rtol: float = 1e-5
) -> CheckedEvaluator:
    """The evaluations a tracked step makes: the training split (and the validation one),
    by class where asked, and by group on a subset (``eval_subset``), whose error bars come
    from its groups' spread."""
    splits = ("train", "val") if validation else ("train",)
    grouped = per_class or backend.subset is not None
    return CheckedEvaluator(backend, splits, per_class=grouped, determinism_rtol=determinism_rtol)
