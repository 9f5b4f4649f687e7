"""The torch backend's evaluation sets: fixed chunks held on the device, or streamed.

A set that fits within ``resident_bytes`` is moved to the device once, as fixed chunks (the
fast path). A larger one stays where it is — host tensors, a Dataset or a DataLoader — and
is read chunk by chunk at every pass, in the same fixed order, each chunk copied to the
device as it is needed: the device then holds one chunk (plus what the loader prefetches)
whatever the size of the set. Both give the same chunks, hence the same L(θ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from lca_core import EmptyEvaluationSetError
from lca_core.backend_kit.evaluation_data import check_finite_inputs, resident_budget
from lca_core.errors import EvaluationDataError

Chunk = tuple[Any, Any]
Chunks = list[Chunk]


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, torch.Tensor):  # from pinned host memory the copy overlaps compute
        return x.to(device, non_blocking=x.is_pinned())
    return x


def length(x: Any) -> int:
    """Examples in a chunk: a tensor's length, or that of a dict batch's first tensor."""
    if isinstance(x, torch.Tensor):
        return x.shape[0]  # not len(x): Tensor.__len__ is Python, the shape is not
    if isinstance(x, Mapping):
        return len(next(v for v in x.values() if isinstance(v, torch.Tensor)))
    return len(x)


def _nbytes(x: Any) -> int:
    if isinstance(x, Mapping):
        return sum(_nbytes(v) for v in x.values())
    return x.element_size() * x.nelement() if isinstance(x, torch.Tensor) else 0


def default_resident_bytes(device: torch.device) -> int:
    """Half of the free GPU memory, or a quarter of the machine's memory on the CPU."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    return resident_budget(free)


@dataclass
class Streamed:
    """A set read at every pass: host chunks from ``batches()``, one at a time on the device."""

    batches: Callable[[], Iterable[Chunk]]
    device: torch.device
    total: int
    labels: np.ndarray | None
    first: Chunk  # the first chunk, on the device: for the trial forward

    def __iter__(self) -> Iterator[Chunk]:
        return self.shard(0, 1)

    def shard(self, rank: int, world: int) -> Iterator[Chunk]:
        """Every ``world``-th chunk from ``rank``, on the device (the others only read)."""
        for x, y in islice(self.batches(), rank, None, world):
            yield to_device(x, self.device), to_device(y, self.device)


EvaluationSet = Chunks | Streamed


def total_of(chunks: EvaluationSet) -> int:
    return chunks.total if isinstance(chunks, Streamed) else sum(length(x) for x, _ in chunks)


def first_of(chunks: EvaluationSet) -> Chunk:
    return chunks.first if isinstance(chunks, Streamed) else chunks[0]


def labels_of(chunks: EvaluationSet) -> np.ndarray | None:
    """The set's targets on the host, when every chunk has tensor targets."""
    if isinstance(chunks, Streamed):
        return chunks.labels
    ys = [y for _, y in chunks]
    return torch.cat(ys).cpu().numpy() if all(isinstance(y, torch.Tensor) for y in ys) else None


def _source(
    data: Any, batch_size: int, device: torch.device
) -> tuple[Callable[[], Iterable[Chunk]], bool]:
    """The set's chunks in a fixed order, as a function that starts a new reading, and
    whether holding them costs memory on ``device`` (a loader's batches are new tensors;
    chunks of tensors already on the device are views of them)."""
    if isinstance(data, torch.utils.data.DataLoader):
        if isinstance(data.sampler, torch.utils.data.RandomSampler):
            raise ValueError(
                "the evaluation DataLoader shuffles; LCA needs a fixed evaluation set in a fixed "
                "order. Pass a DataLoader with shuffle=False (or the tensors themselves)."
            )
        return lambda: ((b, None) if isinstance(b, Mapping) else (b[0], b[1]) for b in data), True
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if not (isinstance(data, Sequence) and len(data) == 2):
        raise EvaluationDataError(
            "evaluation data must be (inputs, targets) tensors, a TensorDataset or a "
            f"finite DataLoader without shuffling; got {type(data).__name__}"
        )
    x, y = (torch.as_tensor(t) for t in data)
    if len(x) != len(y):
        raise EvaluationDataError(
            f"the evaluation set has {len(x)} inputs but {len(y)} targets; give one target "
            "per input (inputs and targets of equal length, in the same order)"
        )

    def chunks() -> Iterator[Chunk]:
        return (
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        )

    return chunks, x.device != device


def _check_finite(x: Any, what: str) -> None:
    for t in x.values() if isinstance(x, Mapping) else [x]:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
            check_finite_inputs(t.detach().float().cpu().numpy(), what)


def _length_hint(data: Any) -> int | None:
    """The number of examples, when the data says so without being read."""
    try:
        return len(data.dataset) if isinstance(data, torch.utils.data.DataLoader) else len(data[0])
    except (TypeError, AttributeError, IndexError, KeyError):
        return None


class _Labels:
    """Targets collected while the set is read, into one buffer sized up front when the
    length is known: thousands of small arrays kept alive between the large chunks would
    fragment the heap (glibc then stops returning the chunks' memory)."""

    def __init__(self, expected: int | None) -> None:
        self.expected, self.buffer, self.filled = expected, None, 0
        self.parts: list[np.ndarray] = []  # what did not fit the buffer, in order

    def add(self, y: torch.Tensor) -> None:
        values = y.detach().cpu().numpy()
        if self.buffer is None and self.expected:
            self.buffer = np.empty((self.expected, *values.shape[1:]), values.dtype)
        end = self.filled + len(values)
        if self.buffer is not None and not self.parts and end <= len(self.buffer):
            self.buffer[self.filled : end] = values
            self.filled = end
        else:  # the length hint was wrong: keep the rest as it comes
            self.parts.append(values.copy())

    def array(self) -> np.ndarray:
        head = [] if self.buffer is None else [self.buffer[: self.filled]]
        return np.concatenate([*head, *self.parts])


def load_set(
    data: Any, batch_size: int, device: torch.device, resident_bytes: int | None, what: str
) -> EvaluationSet:
    """Read the set once (sizes, labels, finite inputs); keep it on the device as chunks if
    it fits in ``resident_bytes`` (default: :func:`default_resident_bytes`), else stream it.

    A DataLoader's batches are the chunks (its ``batch_size``); tensors are cut into
    ``batch_size`` chunks. Dict batches (``model(**batch)``) have no target (None)."""
    source, costs = _source(data, batch_size, device)
    limit = default_resident_bytes(device) if resident_bytes is None else int(resident_bytes)
    chunks: Chunks | None = []
    labels: _Labels | None = _Labels(_length_hint(data))
    first, total, nbytes = None, 0, 0
    # iterating a loader draws its base seed from the global RNG: keep the user's
    with torch.random.fork_rng(devices=[]):
        for x, y in source():
            _check_finite(x, what)
            total += length(x)
            if labels is not None and isinstance(y, torch.Tensor):
                labels.add(y)
            else:
                labels = None
            chunk = (to_device(x, device), to_device(y, device))
            first = first or chunk
            nbytes += _nbytes(x) + _nbytes(y) if costs else 0
            if chunks is not None and nbytes > limit:
                chunks = None  # it does not fit: stream it
            if chunks is not None:
                chunks.append(chunk)
    if total == 0 or first is None:
        raise EmptyEvaluationSetError(
            "the evaluation set is empty; give the tracker at least one sample to evaluate on"
        )
    if chunks is not None:
        return chunks
    return Streamed(source, device, total, labels.array() if labels else None, first)


def split_by_group(
    chunks: Chunks, group_of: np.ndarray, groups: int, batch_size: int
) -> list[Chunks]:
    """The set partitioned into groups (classes, or a subset's random groups), in chunks."""
    x = torch.cat([c[0] for c in chunks])
    y = torch.cat([c[1] for c in chunks])
    index = torch.from_numpy(group_of).to(x.device)
    out = []
    for g in range(groups):
        xg, yg = x[index == g], y[index == g]
        out.append(
            [
                (xg[i : i + batch_size], yg[i : i + batch_size])
                for i in range(0, len(xg), batch_size)
            ]
        )
    return out


def stack_groups(chunks: Chunks, group_of: np.ndarray, groups: int) -> Chunk | None:
    """The set as (groups, m, ...) inputs and targets, group by group, when every group
    holds the same m examples and the inputs are tensors (what a vectorized pass over the
    groups takes); None otherwise."""
    counts = np.bincount(group_of, minlength=groups)
    if not (counts == counts[0]).all() or not all(
        isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) for x, y in chunks
    ):
        return None
    x = torch.cat([c[0] for c in chunks])
    y = torch.cat([c[1] for c in chunks])
    order = torch.from_numpy(np.argsort(group_of, kind="stable")).to(x.device)
    m = int(counts[0])
    return x[order].view(groups, m, *x.shape[1:]), y[order].view(groups, m, *y.shape[1:])
