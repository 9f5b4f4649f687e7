"""What a backend must provide so the core can allocate loss changes for its models.

The core talks to frameworks only through this protocol: flat float vectors in, losses
and flat gradients (reduced over the whole evaluation set) out — numpy float64 vectors, or
the framework's own arrays on its device where the backend keeps the arithmetic there
(``arithmetic``: :mod:`lca_core.arrays`). See ``docs/backends.md`` for a walk-through of
writing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .arrays import kernels, namespace, on_host, to_host
from .layout import Layout


@dataclass
class Evaluation:
    """Mean loss and its gradient over one evaluation set at one point θ.

    ``class_losses`` / ``class_grads`` (optional) are the *weighted* per-class parts,
    (N_c/N)·L_c and (N_c/N)·∇L_c, so that they sum over classes to ``loss`` and ``grad``.
    """

    loss: float
    grad: np.ndarray
    class_losses: np.ndarray | None = None
    class_grads: np.ndarray | None = None

    @classmethod
    def from_groups(cls, losses: Any, grads: Any, per_class: bool) -> Evaluation:
        """From per-group sums (G,) and (G, K): per-class parts, or the single group. The
        losses come to the host (float64); the gradients stay where they are, numpy
        ones as float64."""
        losses = to_host(losses, np.float64)
        if on_host(grads):
            grads = np.asarray(grads, dtype=np.float64)
        if per_class:
            return cls(float(losses.sum()), namespace(grads).sum(grads, axis=0), losses, grads)
        return cls(float(losses[0]), kernels(grads).rows(grads)[0])


@dataclass
class Snapshot:
    """The model's state at one moment: the flat parameters and, when the evaluation
    policy depends on it, an opaque non-trainable state (e.g. BatchNorm running stats)."""

    theta: np.ndarray
    state: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """The contract between the core and a framework.

    ``evaluate`` receives every new quadrature node of a refinement round at once, so a
    backend may batch them (vmap, larger chunks); on a subset one at a time, as each node's
    G × K group gradients are reduced before the next is evaluated (benchmarks/README.md
    says why). It must not change the user's model: parameters, buffers, RNG state and
    accumulated gradients are restored afterwards.

    The required members are ``layout``, ``num_classes``, ``splits``, ``accepts``,
    ``snapshot``, ``evaluate`` and ``policy``. The optional capabilities below have their
    defaults here; a backend that subclasses this protocol (as
    :class:`~lca_core.backend_kit.base.BackendBase` does) inherits them and overrides what
    it supports. The core never probes a backend for a member: :func:`check_backend` says
    at once what one lacks.
    """

    #: the layout of the trainable parameters, fixed for the backend's lifetime
    layout: Layout
    #: number of classes when per-class evaluation is supported, else None
    num_classes: int | None
    #: evaluation sets the backend holds: always "train", plus "val" when given
    splits: tuple[str, ...]
    #: with ``eval_subset``: its size, the full size, seed, groups and their weights
    subset: Mapping[str, Any] | None = None
    #: whether this process writes the run: in a data-parallel job every process evaluates
    #: its shard and gets the same allocation, and only one (rank 0) writes
    writes: bool = True

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        """Whether this backend can serve ``model`` (with the arguments that come with it):
        the plugins' auto-detection asks each backend whose framework is imported."""
        ...

    def snapshot(self) -> Snapshot:
        """The current parameters (flat, in the model's own dtype) and evaluation state."""
        ...

    def evaluate(
        self,
        thetas: Sequence[np.ndarray],
        *,
        state: Any = None,
        split: str = "train",
        per_class: bool = False,
    ) -> list[Evaluation]:
        """Loss and gradient at each θ (float64 vectors), under the given evaluation state."""
        ...

    def policy(self) -> Mapping[str, Any]:
        """How the loss is evaluated (BatchNorm mode, chunk size, …), recorded in the run."""
        ...

    # -- optional capabilities, with their defaults ---------------------------------------
    def use_subset(
        self, size: int | float, seed: int = 0, groups: int = 16, resample: str | None = None
    ) -> None:
        """Evaluate a seeded, class-stratified subset of the training set from now on
        (``eval_subset``; with ``resample``, a fresh one at each point through
        ``draw_subset``); a backend that cannot refuses."""
        raise ValueError(
            f"eval_subset needs a backend that can evaluate a subset; {type(self).__name__} "
            "cannot (build it on lca_core.backend_kit.base.BackendBase)"
        )

    def draw_subset(self, draw: int) -> None:
        """With ``use_subset(..., resample=...)``: evaluate the subset of draw number
        ``draw`` (seeded by it) from now on, and the whole training set as split "full"."""
        raise ValueError(
            f"resample needs a backend that can draw subsets; {type(self).__name__} cannot "
            "(build it on lca_core.backend_kit.base.BackendBase)"
        )

    def evaluate_loss(self, theta: np.ndarray, *, state: Any = None, split: str = "train") -> float:
        """The loss alone at θ, without its gradient: all a resampled run's check needs of
        the full set (``split="full"``). By default a gradient pass's loss; a backend
        that can evaluate the loss in a forward pass alone overrides it."""
        return self.evaluate([theta], state=state, split=split)[0].loss

    def from_writer(self, value: Any) -> Any:
        """The writing process's ``value``, in every process of a data-parallel job (a
        collective call: every process makes it); alone, one's own. A job's other processes
        open no store, so they take the state a resumed run continues from this way."""
        return value

    def examples(self, split: str = "train") -> int | None:
        """How many examples ``split`` holds, when the backend knows (for the estimate)."""
        return None


#: the members every backend must have (the optional ones have defaults on :class:`Backend`)
REQUIRED = ("layout", "num_classes", "splits", "accepts", "snapshot", "evaluate", "policy")


def check_backend(backend: Any) -> Backend:
    """``backend``, if it implements the protocol; else a TypeError naming what it lacks."""
    if not isinstance(backend, Backend):
        lacking = [name for name in (*REQUIRED, *_OPTIONAL) if not hasattr(backend, name)]
        raise TypeError(
            f"{type(backend).__name__} is not an lca backend: it lacks {lacking}. Subclass "
            "lca_core.Backend (or lca_core.backend_kit.base.BackendBase) for the optional "
            "members' defaults; docs/backends.md walks through writing one."
        )
    return backend


_OPTIONAL = (
    "subset",
    "writes",
    "use_subset",
    "draw_subset",
    "evaluate_loss",
    "from_writer",
    "examples",
)
