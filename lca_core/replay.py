"""Replay: compute LCA later for a trajectory recorded during training.

Recording θ_t costs a copy per step; the gradient passes can then run elsewhere, on other
hardware, and a killed replay continues from its last committed step.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

from .allocator import Allocator
from .contract import allocator_options, resolve_options
from .parallel import ray_replay
from .protocol import Backend, Snapshot
from .run import open_run
from .summary import Summary

#: options that describe recording, not allocating: meaningless for a replay
NOT_FOR_REPLAY = ("every", "record_only", "resume", "overwrite", "store_trajectory", "val_data")


def replay(
    run_path: str | os.PathLike[str],
    backend: Backend,
    *,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    executor: str | None = None,
    workers: int = 2,
    address: str | None = None,
    **options: Any,
) -> Summary:
    """Allocate every recorded step of ``run_path`` with ``backend``; returns the summary.

    Results go into the run itself (or into ``out``); rerunning after an interruption
    resumes after the last committed step. ``options`` are the contract's allocation
    options (``rule``, ``tol``, ``per_class``, ``store_params``, …; see docs/api.md).
    ``executor="ray"`` spreads the steps over ``workers`` Ray tasks at a time (a local Ray,
    or the cluster at ``address``); this process alone writes the run, in step order.
    """
    if executor not in (None, "ray"):
        raise ValueError(f"executor must be None (this process) or 'ray', not {executor!r}")
    refused = sorted(set(options) & set(NOT_FOR_REPLAY))
    if refused:
        raise ValueError(f"replay does not take {refused}: they describe how a run is recorded")
    opts = allocator_options(resolve_options(options, "lca_core.replay"))
    run = open_run(run_path)
    if not run.has("theta") or run.recorded_steps == 0:
        raise ValueError(
            f"{run_path} holds no recorded trajectory; record one with store_trajectory=True "
            "(or a Tracker in record-only mode) before replaying"
        )
    every = int(run.config.get("every", 1))  # θ_t recorded every k optimizer steps
    opts.update(resume=True, record_only=False, store_trajectory=False, every=every)
    allocator = Allocator(backend, out or run_path, validation="val" in backend.splits, **opts)
    first, last = allocator.steps, run.recorded_steps
    if first < last:
        allocator.start(Snapshot(run.theta(first)))
        bar = tqdm(initial=first, total=last, desc="replay", disable=not progress)
        if executor == "ray":
            validation = "val" in backend.splits
            for done in ray_replay(
                allocator, backend, run.theta, first, last, every, validation, opts,
                workers=workers, address=address,
            ):  # fmt: skip
                bar.update(done)
        else:
            for t in range(first + 1, last + 1):
                allocator.advance(Snapshot(run.theta(t)), step_index=t * every - 1)
                bar.update()
        bar.close()
    return allocator.close()
