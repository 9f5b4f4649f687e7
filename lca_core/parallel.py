"""Replay on a Ray cluster: the recorded steps in ranges, each range a Ray task.

A task receives its θ_a…θ_b (through Ray's object store: no shared filesystem needed) and
the backend, evaluates θ_a, allocates steps a+1…b and returns each step's result and end
evaluations. The driver takes the results range by range, in step order, into the one run
it writes (:meth:`Allocator.record`), so the run is resumable as a sequential replay is;
Ray retries a task whose worker dies. Ray is imported here only when asked for
(``pip install "loss-change-allocation[ray]"``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np

from .allocator import Allocator
from .engine.step import StepResult
from .options import Options
from .protocol import Backend, Evaluation, Snapshot

#: the options a task's allocator takes (the driver alone stores and budgets)
TASK_OPTIONS = ("rule", "tol", "max_panels", "per_class")
#: most steps in one task: its θs travel through the object store, and a range costs one
#: extra pass (its first point)
MAX_RANGE = 32

Allocated = list[tuple[dict[str, Evaluation], StepResult]]


def allocate_range(
    backend: Backend,
    thetas: np.ndarray,
    first_index: int,
    every: int,
    validation: bool,
    check_determinism: bool,
    options: Options,
) -> tuple[Allocated, int]:
    """Steps θ_0→θ_1, …, θ_{n-1}→θ_n of ``thetas`` (the first is step ``first_index``):
    each step's end evaluations and result, and the gradient passes made."""
    allocator = Allocator(
        backend, options=options, validation=validation, check_determinism=check_determinism
    )
    allocator.guard_budget = False  # the driver judges each step with the run before it
    allocator.start(Snapshot(thetas[0]))
    out = []
    for i, theta in enumerate(thetas[1:]):
        step = first_index + i
        result = allocator.advance(Snapshot(theta), step_index=(step + 1) * every - 1)
        assert result is not None  # not record-only: every step allocates
        out.append((allocator.point_evaluations, result))
    return out, allocator.gradient_passes


def ranges(first: int, last: int, workers: int) -> list[tuple[int, int]]:
    """Steps first+1…last as consecutive (start point, end point) ranges: two per worker,
    at most ``MAX_RANGE`` steps each."""
    size = min(MAX_RANGE, max(1, math.ceil((last - first) / (2 * workers))))
    return [(a, min(a + size, last)) for a in range(first, last, size)]


def ray_replay(
    allocator: Allocator,
    backend: Backend,
    trajectory: Any,
    first: int,
    last: int,
    every: int,
    validation: bool,
    options: Options,
    *,
    workers: int,
    address: str | None,
) -> Iterator[int]:
    """Allocate steps first+1…last on Ray into ``allocator`` (started at θ_first), in
    order; yields the number of steps recorded after each range."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            'replay with executor="ray" needs Ray: pip install "loss-change-allocation[ray]"'
        ) from exc
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=workers if address is None else None)
    task = ray.remote(max_retries=3)(allocate_range)
    shared = ray.put(backend)
    task_options = Options(**{k: getattr(options, k) for k in TASK_OPTIONS})

    def submit(a: int, b: int) -> Any:
        thetas = np.stack([trajectory(t) for t in range(a, b + 1)])
        # the determinism check once, on the run's first point
        return task.remote(shared, thetas, a, every, validation, a == first, task_options)

    todo = iter(ranges(first, last, workers))
    in_flight = deque((span, submit(*span)) for span in islice(todo, 2 * workers))
    while in_flight:  # two tasks per worker at a time, taken back in step order
        (a, b), ref = in_flight.popleft()
        allocated, passes = ray.get(ref)
        if (span := next(todo, None)) is not None:
            in_flight.append((span, submit(*span)))
        for t, (evals, result) in zip(range(a + 1, b + 1), allocated, strict=True):
            allocator.record(Snapshot(trajectory(t)), evals, result, passes if t == b else 0)
        yield b - a
