"""Splitting Keras 3 optimizers' updates into gradient, momentum and weight-decay parts.

Keras keeps an optimizer's slots (momenta, velocities) as variables; the splitter reads
them before and after ``apply_gradients`` (or, in the stateless loop on JAX, from the
``optimizer_variables`` lists around ``stateless_apply``). Keras' weight decay is
decoupled in every optimizer: θ ← θ − lr·λ·θ before the update. The gradient part comes
from the moments alone (m_t − β m_{t−1}), so it is the gradient the optimizer used,
clipped (``clipnorm``) or not. Formulas: docs/concepts.md. Register another optimizer
with ``lca_tensorflow.splitters.SPLITTERS.register(MyOptimizer, factory)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from lca_core.backend_kit.splitters import Parts, Splitter, SplitterRegistry, flat, pieces
from lca_core.errors import UnsupportedOptimizerError

SPLITTERS = SplitterRegistry(
    "Keras", "lca_tensorflow.splitters.SPLITTERS.register(MyOptimizer, factory)"
)


def _np(value: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(value), dtype=np.float64).ravel()


class KerasSplitter(Splitter):
    """What the Keras splitters share: reading slots, the step count and the learning rate
    from the live optimizer or from a stateless loop's ``optimizer_variables``."""

    #: the slot lists of the optimizer this splitter reads, by attribute name
    slots: tuple[str, ...] = ()

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: Sequence[Any]):
        inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer
        self.optimizer = inner if inner is not None else optimizer
        self.variables = list(variables)
        self.name = f"keras.optimizers.{type(self.optimizer).__name__}"
        if self.optimizer.gradient_accumulation_steps:
            raise UnsupportedOptimizerError(
                f"{self.name} with gradient_accumulation_steps applies its update every few "
                "calls, which lca cannot tell apart; accumulate in the loop instead"
            )

    # -- reading the state -------------------------------------------------------------------
    def _values(self, state: Any) -> dict[str, Any]:
        """The slots of every variable (name → list in layout order), the iterations and
        the learning rate, from ``state`` (a stateless loop's optimizer variables) or live."""
        opt = self.optimizer
        if not opt.built:  # before the first step: fresh slots
            zeros = [np.zeros(int(np.prod(v.shape))) for v in self.variables]
            return {"slots": dict.fromkeys(self.slots, zeros), "iterations": 0.0}
        where = {id(v): i for i, v in enumerate(opt.variables)}

        def read(var: Any) -> np.ndarray:
            return _np(var if state is None else state[where[id(var)]])

        slots = {}
        for name in self.slots:
            found = getattr(opt, name)
            slots[name] = [read(found[opt._get_variable_index(v)]) for v in self.variables]
        return {"slots": slots, "iterations": float(read(opt.iterations)[0]), "read": read}

    def _learning_rate(self, values: dict[str, Any]) -> float:
        lr = self.optimizer._learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            return float(_np(lr(values["iterations"]))[0])
        if isinstance(lr, keras.Variable) and "read" in values:
            return float(values["read"](lr)[0])
        return float(_np(self.optimizer.learning_rate)[0])

    def _decays(self) -> list[bool]:
        opt = self.optimizer
        return [bool(opt.weight_decay) and opt._use_weight_decay(v) for v in self.variables]

    # -- the split ---------------------------------------------------------------------------
    def before(self, theta: np.ndarray, state: Any = None) -> None:
        self.theta = theta
        self.start = self._values(state)
        self.lr = self._learning_rate(self.start)

    def after(self, state: Any = None) -> Parts:
        end = self._values(state)
        sizes = [int(np.prod(v.shape)) for v in self.variables]
        theta = pieces(self.theta, sizes)
        wd = float(self.optimizer.weight_decay or 0.0)
        decay = [
            -self.lr * wd * t if d else 0 * t for t, d in zip(theta, self._decays(), strict=True)
        ]
        parts = self.split(self.start, end, sizes)
        return {
            "weight_decay": flat(decay, self.theta.size),
            **{k: flat(v, self.theta.size) for k, v in parts.items()},
        }

    def split(
        self, start: dict[str, Any], end: dict[str, Any], sizes: list[int]
    ) -> dict[str, list]:
        """The ``momentum`` (and ``gradient``) pieces, per variable."""
        raise NotImplementedError


class SGDSplitter(KerasSplitter):
    """keras.optimizers.SGD: m_t = μ m_{t−1} − lr·g, the step m_t (Nesterov: μ m_t − lr·g)."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: Sequence[Any]):
        super().__init__(optimizer, variables)
        self.slots = ("momentums",) if self.optimizer.momentum else ()

    def split(self, start, end, sizes):  # type: ignore[no-untyped-def]
        mu = float(self.optimizer.momentum)
        if not mu:  # no slots: the whole step is the gradient's (and the decay's)
            return {"momentum": [np.zeros(n) for n in sizes]}
        nesterov = bool(self.optimizer.nesterov)
        m0, m1 = start["slots"]["momentums"], end["slots"]["momentums"]
        carried = mu * mu if nesterov else mu
        c = 1.0 + mu if nesterov else 1.0
        return {
            "momentum": [carried * m for m in m0],
            "gradient": [c * (a - mu * b) for a, b in zip(m1, m0, strict=True)],  # c·(−lr g)
        }


class AdamSplitter(KerasSplitter):
    """keras.optimizers.Adam / AdamW: with α = lr·√(1−β2^t)/(1−β1^t) the step is
    −α·m_t/(√v_t + ε), m_t = β1 m_{t−1} + (1−β1) g."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: Sequence[Any]):
        super().__init__(optimizer, variables)
        second = "_velocity_hats" if self.optimizer.amsgrad else "_velocities"
        self.slots = ("_momentums", second)

    def split(self, start, end, sizes):  # type: ignore[no-untyped-def]
        opt = self.optimizer
        b1, b2, eps = float(opt.beta_1), float(opt.beta_2), float(opt.epsilon)
        t = start["iterations"] + 1
        alpha = self.lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m0, m1 = start["slots"]["_momentums"], end["slots"]["_momentums"]
        v1 = end["slots"][self.slots[1]]
        scale = [-alpha / (np.sqrt(v) + eps) for v in v1]
        return {
            "momentum": [p * b1 * m for p, m in zip(scale, m0, strict=True)],
            "gradient": [p * (a - b1 * b) for p, a, b in zip(scale, m1, m0, strict=True)],
        }


class RMSpropSplitter(KerasSplitter):
    """keras.optimizers.RMSprop: the increment lr·g/√(v_t − ḡ_t²·[centered] + ε) is the
    step (−), or is added to m_t = μ m_{t−1} + increment, the step −m_t."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: Sequence[Any]):
        super().__init__(optimizer, variables)
        self.slots = ("_momentums",) if self.optimizer.momentum > 0 else ()

    def split(self, start, end, sizes):  # type: ignore[no-untyped-def]
        mu = float(self.optimizer.momentum)
        if not mu:  # the step is the increment alone: the gradient's (and the decay's)
            return {"momentum": [np.zeros(n) for n in sizes]}
        m0, m1 = start["slots"]["_momentums"], end["slots"]["_momentums"]
        return {
            "momentum": [-mu * m for m in m0],
            "gradient": [-(a - mu * b) for a, b in zip(m1, m0, strict=True)],  # −increment
        }


SPLITTERS.register(keras.optimizers.SGD, SGDSplitter)
SPLITTERS.register(keras.optimizers.RMSprop, RMSpropSplitter)
SPLITTERS.register(keras.optimizers.Adam, AdamSplitter)
SPLITTERS.register(keras.optimizers.AdamW, AdamSplitter)


def make_splitter(optimizer: Any, variables: Sequence[Any]) -> Splitter:
    """The splitter of a Keras optimizer over the model's trainable variables."""
    inner = getattr(optimizer, "inner_optimizer", None)
    return SPLITTERS.make(inner if inner is not None else optimizer, variables=variables)
