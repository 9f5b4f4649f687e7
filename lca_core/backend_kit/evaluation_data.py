"""Evaluation sets as backends need them: checked, labelled, padded into fixed chunks.

Padding every chunk to one size (with zero-weight copies) lets a compiled gradient pass
(jit, tf.function) keep one shape for every step; class-pure chunks give per-class
gradients within the same single pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import EmptyEvaluationSetError, EvaluationDataError


def check_evaluation_data(
    data: tuple[Any, Any], what: str = "evaluation"
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) as host arrays; an empty set or a length mismatch is refused."""
    x, y = (np.asarray(a) for a in data)
    if len(x) == 0:
        raise EmptyEvaluationSetError(
            f"the {what} set is empty; LCA needs at least one example to evaluate the loss on"
        )
    if len(x) != len(y):
        raise EvaluationDataError(
            f"the {what} set has {len(x)} inputs but {len(y)} targets; give one target per "
            "input (inputs and targets of equal length, in the same order)"
        )
    check_finite_inputs(x, what)
    return x, y


def set_name(split: str) -> str:
    """How messages name a split: the evaluation set ("train") or the validation set."""
    return "evaluation" if split == "train" else "validation"


def check_finite_inputs(x: Any, what: str = "evaluation", rows: int = 65536) -> None:
    """Refuse NaN or infinite inputs by name (else they surface as a diverged loss); read
    ``rows`` examples at a time, so a memory-mapped set is checked in bounded memory."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fc" or not arr.size:
        return
    bad, first = 0, None
    for start in range(0, len(arr), rows):
        finite = np.isfinite(arr[start : start + rows].reshape(-1, arr[0].size)).all(axis=1)
        if not finite.all():
            bad += int((~finite).sum())
            first = start + int(np.flatnonzero(~finite)[0]) if first is None else first
    if bad:
        raise EvaluationDataError(
            f"the {what} inputs hold NaN or infinite values ({bad} examples, the first at "
            f"index {first}); LCA would report them as a diverged loss. Drop or impute them "
            "before tracking."
        )


def resident_budget(free_device_bytes: int | None = None) -> int:
    """How many bytes of evaluation set a backend keeps on its device by default: half of
    the device's free memory when known, else a quarter of the machine's memory (CPU)."""
    if free_device_bytes is not None:
        return free_device_bytes // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): 4 GiB
        return 4 << 30


def check_labels(labels: Any, classes: int | None, what: str = "evaluation") -> None:
    """Integer class labels must lie in 0…classes−1 (the model's output width, or the
    ``num_classes`` given); other targets (one-hot, regression) are not checked."""
    y = np.asarray(labels) if labels is not None else None
    if classes is None or y is None or y.ndim != 1 or y.dtype.kind not in "iu" or not y.size:
        return
    bad = (y < 0) | (y >= classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EvaluationDataError(
            f"the {what} labels include {y[first]} (index {first}), outside the model's "
            f"{classes} classes 0…{classes - 1}; fix the labels, or the model's output width "
            "(num_classes)"
        )


def array_sets(
    data: tuple[Any, Any], val_data: tuple[Any, Any] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The evaluation sets by split as checked host arrays: "train", and "val" when given."""
    sets = {"train": check_evaluation_data(data, "evaluation")}
    if val_data is not None:
        sets["val"] = check_evaluation_data(val_data, "validation")
    return sets


def infer_num_classes(labels: Any) -> int | None:
    """Classes of integer class labels (max + 1); None for anything else (regression,
    one-hot targets)."""
    y = np.asarray(labels)
    if y.ndim == 1 and y.size and np.issubdtype(y.dtype, np.integer):
        return int(y.max()) + 1
    return None


def subset_size(size: int | float, total: int) -> int:
    """``eval_subset`` as a number of examples of ``total``: ``size`` itself, or that
    fraction of them; anything else is refused."""
    if isinstance(size, float) and not isinstance(size, bool) and 0 < size <= 1:
        size = max(1, round(size * total))
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= total:
        raise ValueError(
            f"eval_subset must be a number of examples in 1…{total} or a fraction in (0, 1], "
            f"not {size!r}"
        )
    return size


def subset_index(
    labels: Any, total: int, size: int | float, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """A fixed, seeded subset of ``total`` examples: ``size`` of them (or that fraction),
    stratified by class when the labels are integer classes, sorted (the set's order)."""
    size = subset_size(size, total)
    rng = np.random.default_rng(seed)
    y = np.asarray(labels) if labels is not None else None
    if y is None or y.ndim != 1 or y.dtype.kind not in "iu":
        return np.sort(rng.choice(total, size, replace=False))
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * size / total).astype(int)
    extra = rng.choice(len(classes), size - quota.sum(), replace=False, p=counts / total)
    quota[extra] += 1  # the remainder to classes drawn in proportion to their size
    picked = [
        rng.choice(np.flatnonzero(y == c), q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


class PaddedChunks(NamedTuple):
    """(chunks, B, ...) inputs and targets, (chunks, B) weights (1/N, 0 for padding) and
    the group (class) of each chunk, out of ``groups``."""

    xs: np.ndarray
    ys: np.ndarray
    ws: np.ndarray
    group: np.ndarray
    groups: int


def pad_chunks(
    x: np.ndarray,
    y: np.ndarray,
    batch: int,
    group_of: np.ndarray | None = None,
    groups: int = 1,
    total: int | None = None,
    fill: tuple[Any, Any] | None = None,
) -> PaddedChunks:
    """Each group's examples in whole chunks of ``batch``, padded with weight-0 copies of
    its first example (or of ``fill``: the whole group's first, when these examples are a
    block of it — padding enters BatchNorm's batch statistics, so it must be the same);
    each example weighs 1/``total`` (default: these examples are the whole set)."""
    group_of = np.zeros(len(x), dtype=np.int64) if group_of is None else group_of
    total = len(x) if total is None else total
    xs, ys, ws, gs = [], [], [], []
    for g in range(groups):
        idx = np.flatnonzero(group_of == g)
        if not len(idx):
            continue
        n = -(-len(idx) // batch)
        pad = n * batch - len(idx)
        take = np.concatenate([idx, np.full(pad, idx[0])])
        xg, yg = x[take], y[take]
        if fill is not None and pad:
            xg[len(idx) :], yg[len(idx) :] = fill
        xs.append(xg.reshape(n, batch, *x.shape[1:]))
        ys.append(yg.reshape(n, batch, *y.shape[1:]))
        ws.append(np.concatenate([np.full(len(idx), 1.0 / total), np.zeros(pad)]).reshape(n, batch))
        gs.append(np.full(n, g, np.int32))
    return PaddedChunks(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(ws).astype(np.float32),
        np.concatenate(gs),
        groups,
    )
