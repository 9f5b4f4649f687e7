"""The core's own cost per step: everything except the gradient passes.

The backend returns precomputed gradients instantly, so what is timed is interpolation,
quadrature sums, Δ⊙ḡ, per-layer reductions, sign counts and store writes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lca_core import Allocator, Evaluation, Layout, ParamSpec, Snapshot


class FreeGradients:
    """A backend whose gradient passes cost nothing: only the core's work remains."""

    num_classes = None
    splits = ("train",)

    def __init__(self, k: int, layers: int = 8) -> None:
        sizes = np.full(layers, k // layers)
        sizes[-1] += k - sizes.sum()
        self.layout = Layout(
            tuple(
                ParamSpec(f"l{i}.weight", (int(n),), "float32", f"l{i}", 0)
                for i, n in enumerate(sizes)
            )
        )
        rng = np.random.default_rng(0)
        self._grad = rng.normal(size=k)

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def policy(self) -> dict[str, Any]:
        return {}

    def evaluate(self, thetas: Sequence[np.ndarray], **_: Any) -> list[Evaluation]:
        return [Evaluation(float(t[0]), self._grad) for t in thetas]


def time_steps(k: int, steps: int, store_params: bool) -> float:
    backend = FreeGradients(k)
    rng = np.random.default_rng(1)
    thetas = [rng.normal(size=k).astype(np.float32) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        alloc = Allocator(
            backend, f"{tmp}/run", store_params=store_params, tol=1e9, check_determinism=False
        )
        alloc.start(thetas[0])
        times = []
        for t in range(steps):
            start = time.perf_counter()
            alloc.advance(thetas[(t + 1) % 2])
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        alloc.close()
        flush = time.perf_counter() - start
    return (statistics.median(times) + flush / steps) * 1e9 / k


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    sizes = [10**4, 10**5, 10**6] if quick else [10**4, 10**5, 10**6, 10**7]
    rows = []
    for k in sizes:
        steps = max(4, min(200, 2 * 10**7 // k // 10)) if not quick else 4
        without = time_steps(k, steps, False)
        with_params = time_steps(k, steps, True)
        rows.append(
            [
                f"{k:.0e}",
                f"{steps}",
                f"{without:.2f}",
                f"{with_params:.2f}",
                f"{with_params / without:.2f}",
            ]
        )
    notes = (
        "ns per parameter per step of the allocator itself (Simpson, store on local disk); "
        "linear in K means the ns/param column stays flat. Demo model: K = 12,060, "
        "compare with the torch benchmark's pass time."
    )
    return (
        "Core overhead per step (no gradient passes)",
        ["K", "steps", "ns/param", "ns/param + param_lca", "storage ×"],
        rows,
        notes,
    )
