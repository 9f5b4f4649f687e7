"""Oscillations: how long each weight keeps moving, and its gradient keeps pointing, one way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..storage.run import Run
from ._source import DEFAULT_CHUNK, Result, param_blocks


@dataclass
class RunLengths(Result):
    """Mean steps between sign changes = mean length of same-sign runs, per parameter.

    Zero entries (no motion, zero gradient) are skipped, not counted as a change.
    """

    mean: float  # over parameters that were nonzero at least twice
    median: float
    never_changed: float  # fraction of those parameters whose sign never changed
    per_parameter: np.ndarray  # (K,), NaN where fewer than two nonzero entries


@dataclass
class Oscillations(Result):
    motion: RunLengths | None  # sign of Δθ (needs the trajectory)
    gradient: RunLengths | None  # sign of ∇L at θ_t (needs stored gradients)


def run_lengths(blocks: Iterator[np.ndarray]) -> RunLengths:
    """Streams (n, K) blocks of signed values in time order."""
    last = changes = count = None
    for block in blocks:
        signs = np.sign(block).astype(np.int8)
        if last is None:
            k = signs.shape[1]
            last, changes, count = (
                np.zeros(k, np.int8),
                np.zeros(k, np.int64),
                np.zeros(k, np.int64),
            )
        for row in signs:  # per step, vectorised over parameters
            moved = row != 0
            changes += moved & (last != 0) & (row != last)
            last = np.where(moved, row, last)
            count += moved
    if count is None or changes is None:
        raise ValueError("no steps to analyse")
    eligible = count >= 2
    lengths = np.where(eligible, count / (changes + 1.0), np.nan)
    valid = lengths[eligible]
    return RunLengths(
        mean=float(valid.mean()) if valid.size else float("nan"),
        median=float(np.median(valid)) if valid.size else float("nan"),
        never_changed=float((changes[eligible] == 0).mean()) if valid.size else float("nan"),
        per_parameter=lengths,
    )


def _differences(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Δθ_t = θ_{t+1} − θ_t from streamed θ blocks."""
    prev = None
    for block in blocks:
        stacked = block if prev is None else np.vstack([prev, block])
        if len(stacked) > 1:
            yield np.diff(stacked, axis=0)
        prev = stacked[-1:]


def oscillations(
    source: Run | None = None,
    *,
    theta: np.ndarray | None = None,
    grads: np.ndarray | None = None,
    chunk_steps: int = DEFAULT_CHUNK,
) -> Oscillations:
    """From a run that stored the trajectory and/or gradients, or from arrays."""
    if source is not None:
        has_theta, has_grads = source.has("theta"), source.has("grads")
        if not (has_theta or has_grads):
            raise ValueError(
                "oscillation analysis needs the trajectory or the gradients; record the run "
                "with store_trajectory=True and/or store_grads=True"
            )
        motion = (
            run_lengths(_differences(param_blocks(source, "theta", chunk_steps)))
            if has_theta
            else None
        )
        gradient = run_lengths(param_blocks(source, "grads", chunk_steps)) if has_grads else None
        return Oscillations(motion, gradient)
    if theta is None and grads is None:
        raise ValueError("give a run, or theta and/or grads arrays")
    return Oscillations(
        run_lengths(_differences(param_blocks(theta, chunk_steps=chunk_steps)))
        if theta is not None
        else None,
        run_lengths(param_blocks(grads, chunk_steps=chunk_steps)) if grads is not None else None,
    )
