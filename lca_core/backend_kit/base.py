"""What every framework backend shares, so each one only says how its framework computes.

In the spirit of einops' backends (one small class per framework on a shared base): a
backend subclasses :class:`BackendBase`, holds its evaluation sets by split with
:meth:`~BackendBase.hold_sets` and implements :meth:`~BackendBase.evaluate_split`; the base
refuses a split it was not given or a per-class request without classes, with one message
everywhere. Backends that do not subclass it still work: the core needs only the
:class:`~lca_core.protocol.Backend` protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..layout import Layout
from ..protocol import Backend, Evaluation, Snapshot
from .evaluation_data import (
    PaddedChunks,
    check_labels,
    infer_num_classes,
    pad_chunks,
    resident_budget,
    set_name,
    subset_index,
    subset_size,
)

#: how BatchNorm normalises during evaluation: each fixed chunk's statistics, or the
#: running ones (then their drift between steps is measured and reported)
BN_POLICIES = ("batch", "running")
#: how a resampled subset is laid along the trajectory (docs/concepts.md): one subset per
#: point, serving both steps it ends and starts ("shared", one pass per step), or one per
#: step, at both of its ends ("paired", two passes per step, the identity exact per step)
RESAMPLE = ("shared", "paired")
#: examples per evaluation chunk when the user does not say
DEFAULT_EVAL_BATCH = 4096


def check_bn_policy(policy: str) -> str:
    if policy not in BN_POLICIES:
        raise ValueError(f"bn_policy must be one of {BN_POLICIES}, not {policy!r}")
    return policy


class BackendBase(Backend):
    """The shared part of a backend: evaluation sets by split, checked requests."""

    layout: Layout
    num_classes: int | None = None
    splits: tuple[str, ...] = ("train",)
    subset: dict[str, Any] | None = None
    _groups: Mapping[str, np.ndarray] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> BackendBase:
        backend = super().__new__(cls)
        backend._recipe = (args, kwargs)  # how it was built: see __reduce__
        backend._subset_call = None
        return backend

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent to another process (a Ray worker of a parallel replay), a backend is built
        there again from its constructor's arguments, and given the same subset: compiled
        passes, device buffers, devices and views into the model's storage do not survive
        pickling (a view arrives as a copy, and the model would evaluate stale values)."""
        args, kwargs = self._recipe
        return (_rebuilt, (type(self), args, kwargs, self._subset_call))

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        return False

    def hold_sets(
        self, sets: Mapping[str, Any], labels: Any = None, num_classes: int | None = None
    ) -> None:
        """Keep the evaluation sets ("train", optionally "val"); the classes are given or
        inferred from the training set's integer labels."""
        self.sets = dict(sets)
        self.splits = tuple(self.sets)
        check_labels(labels, num_classes)
        self.num_classes = num_classes or infer_num_classes(labels)

    # -- grouped evaluation: by class, or by random group of a subset (error bars) -----------
    @property
    def num_groups(self) -> int | None:
        """Groups a grouped ("per-class") pass splits the set into: the classes, or on a
        subset the random groups its error bars are estimated from."""
        return self.subset["groups"] if self.subset else self.num_classes

    def group_of(self, split: str) -> np.ndarray:
        """The group of each example of ``split``, in the set's order."""
        if split in self._groups:
            return self._groups[split]
        return np.asarray(self.labels(split), dtype=np.int64)

    def examples(self, split: str = "train") -> int | None:
        try:
            return len(self.sets[split][0])
        except (KeyError, TypeError, IndexError):
            return None

    def labels(self, split: str) -> Any:
        """The split's targets as a host array (array sets hold (inputs, targets))."""
        return self.sets[split][1]

    def take(self, split: str, index: np.ndarray) -> Any:
        """The split restricted to ``index`` (array sets; a backend with its own set
        format overrides this)."""
        x, y = self.sets[split]
        return x[index], y[index]

    def use_subset(
        self, size: int | float, seed: int = 0, groups: int = 16, resample: str | None = None
    ) -> None:
        """Evaluate a seeded, class-stratified subset of the training set, split into
        random groups of equal size whose spread gives the standard error of every
        allocation (equal sizes let a backend evaluate the groups in one vectorized call;
        the subset is rounded down to a multiple of its groups for that). ``resample``
        ("shared" or "paired"): a fresh subset at every trajectory point
        (:meth:`draw_subset`), the whole set kept as the split "full" for the run's
        check (docs/concepts.md, "Resampled subsets")."""
        if resample is not None and resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE} (or None), not {resample!r}")
        self._subset_call = (size, seed, groups, resample)
        if resample is not None:
            self.sets["full"] = self.sets["train"]
        whole = "full" if resample is not None else "train"
        labels = self.labels(whole)
        total = len(labels)
        n = subset_size(size, total)
        if n < 2:
            raise ValueError(
                f"eval_subset={size!r} leaves {n} example; a subset needs at least 2, for "
                "the standard errors of its groups"
            )
        groups = max(2, min(groups, n // 2))
        n -= n % groups
        self.subset = {
            "size": n,
            "of": total,
            "seed": seed,
            "groups": groups,
            "weights": [1.0 / groups] * groups,
            "resample": resample,
        }
        self._take_subset(whole, subset_index(labels, total, n, seed))

    def draw_subset(self, draw: int) -> None:
        """With ``resample``: evaluate the subset of draw number ``draw`` (the trajectory
        point's index) from now on: seeded by (seed, draw), independent of the training
        batches, the same size and groups at every draw."""
        assert self.subset is not None and self.subset["resample"] is not None
        labels = self.labels("full")
        index = subset_index(labels, len(labels), self.subset["size"], [self.subset["seed"], draw])
        self._take_subset("full", index, draw)

    def _take_subset(self, whole: str, index: np.ndarray, draw: int = 0) -> None:
        """The training split restricted to ``index``, in random groups of equal size."""
        assert self.subset is not None
        groups = self.subset["groups"]
        order = np.random.default_rng([self.subset["seed"] + 1, draw]).permutation(len(index))
        group_of = np.empty(len(index), dtype=np.int64)
        group_of[order] = np.arange(len(index)) % groups
        self.sets["train"] = self.take(whole, index)
        self._groups = {**self._groups, "train": group_of}
        self.subset_changed()

    def subset_changed(self) -> None:
        """The training split is now another subset: a backend that keeps chunks of it
        (padded, on the device, by class) drops them here."""

    def check_trial(self, width: int | None, labels: dict[str, Any]) -> None:
        """After a trial forward on a few examples: every split's integer labels fit the
        model's ``width`` output classes (a label outside them is named now, not later as
        a NaN loss or an index error deep in the framework)."""
        for split, y in labels.items():
            check_labels(y, width, set_name(split))

    def _chunk_size(self, split: str, per_class: bool, batch: int, multiple: int) -> int:
        """At most ``batch``, a multiple of ``multiple`` (devices), no larger than the set
        (per class: than its largest class, each class being padded to whole chunks)."""
        n = len(self.sets[split][0])
        if per_class:
            n = int(np.bincount(self.group_of(split)).max())
        return max(multiple, -(-min(batch, n) // multiple) * multiple)

    def padded(self, split: str, per_class: bool, batch: int, multiple: int = 1) -> PaddedChunks:
        """A held (inputs, targets) split in fixed chunks of ``batch`` (at most the set),
        class-pure for a per-class pass: what compiled passes (jit, tf.function) scan."""
        x, y = self.sets[split]
        size = self._chunk_size(split, per_class, batch, multiple)
        if not per_class:
            return pad_chunks(x, y, size)
        return pad_chunks(x, y, size, self.group_of(split), self.num_groups or 1)

    #: bytes of evaluation set kept on the device; a larger set is streamed (``blocks``)
    resident_bytes: int | None = None

    def _resident_limit(self) -> int:
        return self.resident_bytes if self.resident_bytes is not None else resident_budget()

    def streamed(self, split: str) -> bool:
        """Whether ``split`` is larger than ``resident_bytes`` and so read in blocks."""
        x, y = self.sets[split]
        return np.asarray(x).nbytes + np.asarray(y).nbytes > self._resident_limit()

    def blocks(
        self, split: str, per_class: bool, batch: int, multiple: int = 1
    ) -> Iterator[PaddedChunks]:
        """The split as consecutive blocks of the chunks :meth:`padded` makes (weights 1/N
        of the whole set), each block read from the host arrays (a memory map stays on
        disk) when it is needed: a pass sums over the blocks what it sums over the held
        chunks, with at most about ``resident_bytes`` of the set on the device."""
        x, y = self.sets[split]
        size = self._chunk_size(split, per_class, batch, multiple)
        groups = (self.num_groups or 1) if per_class else 1
        group_of = self.group_of(split) if per_class else np.zeros(len(x), dtype=np.int64)
        example = (np.asarray(x[:1]).nbytes + np.asarray(y[:1]).nbytes) or 1
        per_block = size * max(1, self._resident_limit() // (example * size))
        for g in range(groups):
            index = np.flatnonzero(group_of == g)
            first = (x[index[0]], y[index[0]]) if len(index) else None
            for start in range(0, len(index), per_block):
                part = index[start : start + per_block]
                yield pad_chunks(
                    x[part], y[part], size, np.full(len(part), g), groups, len(x), first
                )

    def evaluate(
        self,
        thetas: Sequence[np.ndarray],
        *,
        state: Any = None,
        split: str = "train",
        per_class: bool = False,
    ) -> list[Evaluation]:
        if split not in self.splits and not (split == "full" and "full" in self.sets):
            raise ValueError(
                f"this backend has no {split!r} evaluation set (it holds {list(self.splits)}); "
                "build it with val_data= for validation LCA"
            )
        if per_class and not self.num_groups:
            raise ValueError("per-class evaluation needs labelled classification data")
        return self.evaluate_split(list(thetas), state, split, per_class)

    def evaluate_split(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        """Loss and gradient at each θ over one held split (the framework's work)."""
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def policy(self) -> Mapping[str, Any]:
        raise NotImplementedError


def _rebuilt(
    cls: type[BackendBase],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    subset: tuple[int | float, int, int, str | None] | None,
) -> BackendBase:
    """A backend built again in another process (see :meth:`BackendBase.__reduce__`)."""
    backend = cls(*args, **kwargs)
    if subset is not None:
        backend.use_subset(*subset)
    return backend
