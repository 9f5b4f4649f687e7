"""Replay: compute LCA later for a trajectory recorded during training.

Recording θ_t costs a copy per step; the gradient passes can then run elsewhere, on other
hardware, and a killed replay continues from its last committed step.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

from .allocator import Allocator
from .protocol import Backend, Snapshot
from .run import open_run


def replay(
    run_path: str | os.PathLike[str],
    backend: Backend,
    *,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Allocate every recorded step of ``run_path`` with ``backend``; returns the summary.

    Results go into the run itself (or into ``out``); rerunning after an interruption
    resumes after the last committed step. ``options`` are :class:`Allocator` options.
    """
    run = open_run(run_path)
    if not run.has("theta") or run.recorded_steps == 0:
        raise ValueError(
            f"{run_path} holds no recorded trajectory; record one with store_trajectory=True "
            "(or a Tracker in record-only mode) before replaying"
        )
    options.pop("store_trajectory", None)  # the trajectory is already stored
    allocator = Allocator(backend, out or run_path, resume=True, **options)
    first = allocator.steps
    if first < run.recorded_steps:
        allocator.start(Snapshot(run.theta(first)))
        for t in tqdm(
            range(first + 1, run.recorded_steps + 1),
            initial=first,
            total=run.recorded_steps,
            desc="replay",
            disable=not progress,
        ):
            allocator.advance(Snapshot(run.theta(t)), step_index=t - 1)
    return allocator.close()
