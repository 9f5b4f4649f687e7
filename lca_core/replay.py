"""Replay: compute LCA later for a trajectory recorded during training.

Recording θ_t costs a copy per step; the gradient passes can then run elsewhere, on other
hardware, and a killed replay continues from its last committed step.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

from .allocator import Allocator
from .contract import resolve_options
from .engine.summary import Summary
from .options import Options, resample_design
from .parallel import ray_replay
from .protocol import Backend, Snapshot
from .storage.run import open_run

#: options that describe recording, not allocating: meaningless for a replay
NOT_FOR_REPLAY = Options.names(replay=False)


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

    Args:
        run_path: a run recorded with ``store_trajectory=True`` or ``record_only=True``.
        backend: evaluates the loss of the same model and data (its parameters are set
            from the trajectory; the model is not changed).
        out: write the allocation into another run directory instead.
        progress: show a progress bar.
        executor: None (this process) or "ray".
        workers: Ray tasks at a time.
        address: a Ray cluster's address (None: a local Ray).
        **options: allocation options (``rule``, ``tol``, ``per_class``, …).

    Returns:
        The run's :class:`~lca_core.Summary`.

    Raises:
        ValueError: a run with no trajectory, a recording option (``every``,
            ``record_only``, …), or an unknown executor.
    """
    if executor not in (None, "ray"):
        raise ValueError(f"executor must be None (this process) or 'ray', not {executor!r}")
    refused = sorted(set(options) & set(NOT_FOR_REPLAY))
    if refused:
        hint = (
            "; to see a run's steps in a dashboard, `lca export RUN --tensorboard DIR` (or "
            "--mlflow) writes them after the replay"
            if set(refused) & {"log_to", "log_every", "alerts", "on_alert"}
            else ""
        )
        raise ValueError(
            f"replay does not take {refused}: they describe how a run is recorded{hint}"
        )
    run = open_run(run_path)
    if not run.has("theta") or run.recorded_steps == 0:
        raise ValueError(
            f"{run_path} holds no recorded trajectory; record one with store_trajectory=True "
            "(or a Tracker in record-only mode) before replaying"
        )
    every = run.options.every  # θ_t recorded every k optimizer steps
    opts = Options.of(resolve_options(options, "lca_core.replay")).with_(
        store=out or run_path, resume=True, every=every
    )
    if opts.eval_subset is not None:  # a tracker's option: the backend's subset, as a tracker's
        backend.use_subset(
            opts.eval_subset, resample=resample_design(opts.resample, opts.eval_subset)
        )
    validation = "val" in backend.splits
    allocator = Allocator(backend, options=opts, validation=validation)
    first, last = allocator.steps, run.recorded_steps
    if first < last:
        allocator.start(Snapshot(run.theta(first)))
        bar = tqdm(initial=first, total=last, desc="replay", disable=not progress)
        if executor == "ray":
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
