"""optax optimizers whose updates lca can split: ``sgd``, ``rmsprop``, ``adam``, ``adamw``.

optax closes hyperparameters over in its transformations, so lca cannot read them from
``optax.sgd(...)``. These constructors build the same updates with
``optax.inject_hyperparams``, which keeps them (and a schedule's current value) in the
optimizer state, and return them as one of the transformation types below, by which the
tracker knows the rule::

    tx = lca_jax.optimizers.adamw(1e-3, weight_decay=1e-4)
    opt_state = tx.init(params)
    tracker = lca_jax.Tracker(loss_fn, params, data, optimizer=tx)
    ...
    updates, new_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    tracker.update(params, new_params, opt_state=(opt_state, new_state))

They work anywhere an optax transformation does (``optax.chain`` with a clipping before
them, flax's ``TrainState`` and ``nnx.Optimizer``). Imports optax (the caller's choice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from lca_core.backend_kit.splitters import Parts, Splitter, SplitterRegistry, flat, pieces
from lca_core.errors import UnsupportedOptimizerError

SPLITTERS = SplitterRegistry(
    "JAX/optax",
    "lca_jax.optimizers.SPLITTERS.register(MyTransformation, factory); the optax "
    "optimizers lca splits are built by lca_jax.optimizers.sgd / rmsprop / adam / adamw",
)

_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)


class SGD(optax.GradientTransformationExtraArgs):
    """``optax.sgd`` with weight decay as an L2 term (torch's SGD without dampening)."""

    __slots__ = ()


class NesterovSGD(optax.GradientTransformationExtraArgs):
    """:func:`sgd` with ``nesterov=True``."""

    __slots__ = ()


class RMSprop(optax.GradientTransformationExtraArgs):
    """``optax.rmsprop`` (ε inside the square root, as optax's default) with momentum and
    weight decay as an L2 term."""

    __slots__ = ()


class Adam(optax.GradientTransformationExtraArgs):
    """``optax.adam`` with weight decay as an L2 term (torch's Adam)."""

    __slots__ = ()


class AdamW(optax.GradientTransformationExtraArgs):
    """``optax.adamw``: decoupled weight decay."""

    __slots__ = ()


def _sgd(learning_rate: Any, momentum: Any, weight_decay: Any, nesterov: bool) -> Any:
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate),
    )


def _rmsprop(learning_rate: Any, decay: Any, eps: Any, momentum: Any, weight_decay: Any) -> Any:
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_rms(decay=decay, eps=eps),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    )


def _adam(
    learning_rate: Any, b1: Any, b2: Any, eps: Any, weight_decay: Any, decoupled: bool
) -> Any:
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    decay = optax.add_decayed_weights(weight_decay)
    return optax.chain(
        *((adam, decay) if decoupled else (decay, adam)),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgd(
    learning_rate: float | Callable[[Any], Any],
    momentum: float = 0.0,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> SGD | NesterovSGD:
    """SGD: trace t = g' + μ t_{t−1}, g' = g + λθ; the step −lr·t (Nesterov: −lr(g' + μ t))."""
    inner = optax.inject_hyperparams(_sgd, static_args="nesterov")
    tx = inner(learning_rate, momentum, weight_decay, nesterov)
    return (NesterovSGD if nesterov else SGD)(tx.init, tx.update)


def rmsprop(
    learning_rate: float | Callable[[Any], Any],
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> RMSprop:
    """RMSprop: ν_t = ρ ν_{t−1} + (1−ρ) g'², the trace t = μ t_{t−1} + g'/√(ν_t + ε), the
    step −lr·t; g' = g + λθ."""
    tx = optax.inject_hyperparams(_rmsprop)(learning_rate, decay, eps, momentum, weight_decay)
    return RMSprop(tx.init, tx.update)


def adam(
    learning_rate: float | Callable[[Any], Any],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
) -> Adam:
    """Adam with an L2 term λθ added to the gradient (as torch's ``Adam(weight_decay=)``)."""
    inner = optax.inject_hyperparams(_adam, static_args="decoupled")
    tx = inner(learning_rate, b1, b2, eps, weight_decay, False)
    return Adam(tx.init, tx.update)


def adamw(
    learning_rate: float | Callable[[Any], Any],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 1e-4,
) -> AdamW:
    """AdamW, as ``optax.adamw``: the step −lr(m̂/(√v̂ + ε) + λθ)."""
    inner = optax.inject_hyperparams(_adam, static_args="decoupled")
    tx = inner(learning_rate, b1, b2, eps, weight_decay, True)
    return AdamW(tx.init, tx.update)


def _host(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf, dtype=np.float64).ravel() for leaf in jax.tree_util.tree_leaves(tree)]


def _inject_state(state: Any) -> Any:
    """The state of lca's transformation inside ``state`` (alone, or in an optax.chain)."""
    found = [
        s
        for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, _STATES))
        if isinstance(s, _STATES)
    ]
    if len(found) != 1:
        raise ValueError(
            f"opt_state holds {len(found)} states of an lca_jax.optimizers transformation; "
            "give the state of the one optimizer the tracker splits (opt_state=(before, after))"
        )
    return found[0]


class OptaxSplitter(Splitter):
    """Reads an lca_jax.optimizers transformation's state before and after a step (given
    by the loop, or read live from an ``nnx.Optimizer`` by ``live``)."""

    def __init__(self, tx: Any, *, live: Callable[[], Any] | None = None) -> None:
        self.tx, self.live = tx, live
        self.name = f"lca_jax.optimizers.{type(tx).__name__.lower()}"

    def _state(self, state: Any) -> Any:
        if state is None:
            if self.live is None:
                raise TypeError("give the optimizer's states: opt_state=(before, after)")
            state = self.live()
        return _inject_state(state)

    def before(self, theta: np.ndarray, state: Any = None) -> None:
        self.theta, self.start = theta, self._state(state)

    def after(self, state: Any = None) -> Parts:
        end = self._state(state)
        hp = {k: float(v) for k, v in end.hyperparams.items()}  # as used by this step
        parts = self.split(hp, self.start.inner_state, end.inner_state)
        return {k: flat(v, self.theta.size) for k, v in parts.items()}

    def split(self, hp: dict[str, float], start: Any, end: Any) -> dict[str, list[np.ndarray]]:
        raise NotImplementedError


class SGDSplitter(OptaxSplitter):
    def split(self, hp, start, end):  # type: ignore[no-untyped-def]
        lr, mu, wd = hp["learning_rate"], hp["momentum"], hp["weight_decay"]
        nesterov = isinstance(self.tx, NesterovSGD)
        before, after = _host(start[1].trace), _host(end[1].trace)
        c = 1.0 + mu if nesterov else 1.0  # the coefficient of g' in the step
        carried = mu * mu if nesterov else mu
        theta = pieces(self.theta, (b.size for b in before))
        return {
            "momentum": [-lr * carried * b for b in before],
            "weight_decay": [-lr * c * wd * t for t in theta],
            # g' from the trace alone: t_t − μ t_{t−1}
            "gradient": [
                -lr * c * (a - mu * b) + lr * c * wd * t
                for a, b, t in zip(after, before, theta, strict=True)
            ],
        }


class RMSpropSplitter(OptaxSplitter):
    def split(self, hp, start, end):  # type: ignore[no-untyped-def]
        lr, mu, wd, eps = hp["learning_rate"], hp["momentum"], hp["weight_decay"], hp["eps"]
        before, after = _host(start[2].trace), _host(end[2].trace)
        nu = _host(end[1].nu)
        theta = pieces(self.theta, (b.size for b in before))
        scale = [-lr / np.sqrt(n + eps) for n in nu]
        decay = [p * wd * t for p, t in zip(scale, theta, strict=True)]
        return {
            "momentum": [-lr * mu * b for b in before],
            "weight_decay": decay,
            # g'/√(ν + ε) from the trace alone: t_t − μ t_{t−1}
            "gradient": [
                -lr * (a - mu * b) - d for a, b, d in zip(after, before, decay, strict=True)
            ],
        }


class AdamSplitter(OptaxSplitter):
    def split(self, hp, start, end):  # type: ignore[no-untyped-def]
        decoupled = type(self.tx) is AdamW
        at = 0 if decoupled else 1  # where scale_by_adam is in the chain
        lr, b1, b2, eps, wd = (hp[k] for k in ("learning_rate", "b1", "b2", "eps", "weight_decay"))
        s0, s1 = start[at], end[at]
        t = float(s1.count)
        m0, m1, v1 = _host(s0.mu), _host(s1.mu), _host(s1.nu)
        theta = pieces(self.theta, (m.size for m in m0))
        scale = [-lr / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps) for v in v1]
        if decoupled:
            decay = [-lr * wd * th for th in theta]
            grad = [p * (a - b1 * b) for p, a, b in zip(scale, m1, m0, strict=True)]
        else:  # L2: (1 − β1)(g + λθ) = m_t − β1 m_{t−1}
            decay = [p * (1 - b1) * wd * th for p, th in zip(scale, theta, strict=True)]
            grad = [p * (a - b1 * b) - d for p, a, b, d in zip(scale, m1, m0, decay, strict=True)]
        return {
            "momentum": [p * b1 * b for p, b in zip(scale, m0, strict=True)],
            "weight_decay": decay,
            "gradient": grad,
        }


SPLITTERS.register(SGD, SGDSplitter)
SPLITTERS.register(NesterovSGD, SGDSplitter)
SPLITTERS.register(RMSprop, RMSpropSplitter)
SPLITTERS.register(Adam, AdamSplitter)
SPLITTERS.register(AdamW, AdamSplitter)


def make_splitter(optimizer: Any) -> Splitter:
    """``optimizer=``: an lca_jax.optimizers transformation (its states are given to
    ``tracker.update``), or an ``nnx.Optimizer`` built with one (read live)."""
    tx = getattr(optimizer, "tx", None)
    if tx is not None and hasattr(optimizer, "opt_state"):  # nnx.Optimizer
        from flax import nnx

        if not SPLITTERS.knows(tx):
            raise UnsupportedOptimizerError(
                "nnx.Optimizer(model, tx, ...) splits when tx is built by "
                "lca_jax.optimizers.sgd / rmsprop / adam / adamw"
            )
        return SPLITTERS.make(tx, live=lambda: nnx.as_pure(optimizer.opt_state))
    if isinstance(optimizer, optax.GradientTransformation) and not SPLITTERS.knows(optimizer):
        raise UnsupportedOptimizerError(
            "optax closes an optimizer's hyperparameters into its functions, so lca cannot "
            "read them from optax.sgd/adam/adamw: build the optimizer with "
            "lca_jax.optimizers.sgd / rmsprop / adam / adamw (the same updates, their "
            "hyperparameters "
            "kept in the state) and pass that as optimizer="
        )
    return SPLITTERS.make(optimizer)


__all__ = [
    "SGD",
    "SPLITTERS",
    "Adam",
    "AdamW",
    "NesterovSGD",
    "RMSprop",
    "adam",
    "adamw",
    "make_splitter",
    "rmsprop",
    "sgd",
]
