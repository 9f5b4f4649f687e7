"""What a framework's optimizer splitter builds on, and the registry that finds one.

A splitter reads an optimizer's state around one step and says which part of the step Δ
each term of the update rule made (:mod:`lca_core.engine.parts`): ``momentum`` and
``weight_decay`` for every parameter, flat in the layout's order, and on its own the
``gradient`` part where the state allows (the tracker checks it against the remainder).
It never changes the optimizer: it reads the state before and after the optimizer does.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import UnsupportedOptimizerError

#: a splitter's parts of one step: name → flat float64 vector (K,)
Parts = dict[str, np.ndarray]


class Splitter(ABC):
    """One optimizer's update rule, read from its state around each step.

    ``before(theta, state)`` is called just before the optimizer's step, with θ_t flat
    (float64) and, in a functional loop, the optimizer's state before the step;
    ``after(state)`` just after it (with the state after), returning the step's parts.
    In-place optimizers (torch, Keras) read their live state and get ``state=None``.
    """

    #: what the run records as the optimizer (e.g. ``"torch.optim.AdamW"``)
    name: str = "optimizer"

    @abstractmethod
    def before(self, theta: np.ndarray, state: Any = None) -> None:
        """Read what the step's parts need from before the step (θ_t, the momentum)."""

    @abstractmethod
    def after(self, state: Any = None) -> Parts:
        """The step's ``momentum`` and ``weight_decay`` (and ``gradient`` where the state
        gives it independently), each flat (K,) in the layout's order."""


def flat(pieces: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Per-parameter pieces joined into one float64 vector of the layout's size."""
    out = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in pieces] or [[]])
    if out.size != size:
        raise ValueError(f"a splitter's part has {out.size} values for {size} parameters")
    return out


def public_name(kind: type) -> str:
    """A class by the shortest module path that exports it (``torch.optim.SGD``, not
    ``torch.optim.sgd.SGD``; ``keras.optimizers.SGD``, not ``keras.src.optimizers.SGD``)."""
    parts = [p for p in kind.__module__.split(".") if p not in ("src", "_src")]
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is not None and getattr(module, kind.__qualname__, None) is kind:
            return f"{'.'.join(parts[:i])}.{kind.__qualname__}"
    return f"{kind.__module__}.{kind.__qualname__}"


def pieces(vector: np.ndarray, sizes: Iterable[int]) -> list[np.ndarray]:
    """A flat vector cut into per-parameter pieces of ``sizes`` (the inverse of
    :func:`flat`)."""
    return np.split(vector, np.cumsum(list(sizes))[:-1])


class SplitterRegistry:
    """Optimizer type → splitter factory, for one framework (found along the type's MRO,
    so a subclass of a supported optimizer is split as its base unless registered)."""

    def __init__(self, framework: str, how: str) -> None:
        self.framework, self.how = framework, how
        self._factories: dict[type, Callable[..., Splitter]] = {}

    def register(self, optimizer_type: type, factory: Callable[..., Splitter]) -> None:
        """Split ``optimizer_type`` with ``factory(optimizer, **context)``."""
        self._factories[optimizer_type] = factory

    def supported(self) -> list[str]:
        return sorted(public_name(t) for t in self._factories)

    def knows(self, optimizer: Any) -> bool:
        """Whether ``optimizer`` (or a base of its type) has a splitter."""
        return any(kind in self._factories for kind in type(optimizer).__mro__)

    def make(self, optimizer: Any, **context: Any) -> Splitter:
        """The splitter of ``optimizer``; UnsupportedOptimizerError names the supported
        ones and how to add a splitter."""
        for kind in type(optimizer).__mro__:
            if kind in self._factories:
                return self._factories[kind](optimizer, **context)
        raise UnsupportedOptimizerError(
            f"lca cannot split the updates of {public_name(type(optimizer))} "
            f"({self.framework}). Supported: "
            f"{', '.join(self.supported()) or 'none'}. To add one, subclass "
            f"lca_core.backend_kit.splitters.Splitter and register it: {self.how}"
        )
