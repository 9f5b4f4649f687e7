"""The core's own cost per step: everything except the gradient passes, on the host path
(numpy float64) and on the device paths (torch tensors, JAX arrays; on the CPU here).

The backend returns a precomputed gradient at once (a fresh copy per evaluation, as a
real pass's result is new memory), so what is timed is interpolation, quadrature sums,
Δ⊙ḡ, per-layer reductions, sign counts and store writes. Each measurement runs in a
fresh process, whose resident memory is read before the run (after the backend's own
arrays exist) and at its peak (the peak reset there): what LCA holds, in K-vectors of
the parameters' dtype (float32).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lca_core import Allocator, Backend, Evaluation, Layout, ParamSpec, Snapshot
from lca_core.errors import AccuracyWarning

KINDS = ("numpy", "torch", "jax")


class FreeGradients(Backend):
    """A backend whose gradient passes cost nothing: only the core's work remains."""

    num_classes = None
    splits = ("train",)

    def __init__(self, k: int, kind: str, layers: int = 8) -> None:
        sizes = np.full(layers, k // layers)
        sizes[-1] += k - sizes.sum()
        self.layout = Layout(
            tuple(
                ParamSpec(f"l{i}.weight", (int(n),), "float32", f"l{i}", 0)
                for i, n in enumerate(sizes)
            )
        )
        grad = np.random.default_rng(0).normal(size=k).astype(np.float32)
        self.kind = kind
        self._grad = as_kind(grad.astype(np.float64) if kind == "numpy" else grad, kind)

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def policy(self) -> dict[str, Any]:
        return {}

    def evaluate(self, thetas: Sequence[Any], **_: Any) -> list[Evaluation]:
        return [Evaluation(float(t[0]), fresh(self._grad, self.kind)) for t in thetas]


def as_kind(x: np.ndarray, kind: str) -> Any:
    if kind == "torch":
        import torch

        return torch.from_numpy(x)
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(x)
    return x


def fresh(x: Any, kind: str) -> Any:
    if kind == "torch":
        return x.clone()
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.array(x, copy=True)
    return x.copy()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(s for s in f if s.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _close(alloc: Allocator) -> None:
    with warnings.catch_warnings():  # its budget: these gradients are not the loss's
        warnings.simplefilter("ignore", AccuracyWarning)
        alloc.close()


def measure(k: int, kind: str, steps: int) -> dict[str, float]:
    """ns per parameter per step (store flushes and close included), and the K-vectors
    LCA holds between steps and at its peak."""
    backend = FreeGradients(k, kind)
    rng = np.random.default_rng(1)
    thetas = [as_kind(rng.normal(size=k).astype(np.float32), kind) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("warm", "run"):  # the first run's imports and caches are not LCA's
            # Simpson on its first nodes (the gradients are not the loss's: no refinement)
            alloc = Allocator(backend, f"{tmp}/{run}", max_panels=2, check_determinism=False)
            if run == "warm":
                alloc.start(thetas[0])
                alloc.advance(thetas[1])
                _close(alloc)
                del alloc
                gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
        base = rss_bytes()
        alloc.start(thetas[0])
        start = time.perf_counter()
        held = 0
        for t in range(steps):
            alloc.advance(thetas[(t + 1) % 2])
            held = max(held, rss_bytes() - base)
        _close(alloc)
        seconds = time.perf_counter() - start
        peak = peak_bytes() - base
    vector = 4 * k
    return {"ns": seconds * 1e9 / (steps * k), "held": held / vector, "peak": peak / vector}


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    sizes = [10**5, 10**6] if quick else [10**6, 10**7, 10**8]
    rows = []
    for k in sizes:
        steps = int(np.clip(3 * 10**7 // k, 3, 300))
        found = {}
        for kind in KINDS:
            code = (
                f"import json, bench_core; print(json.dumps(bench_core.measure({k}, '{kind}', "
                f"{steps})))"
            )
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                check=True,
            )
            found[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        numpy = found["numpy"]
        rows.append(
            [
                f"{k:.0e}",
                f"{steps}",
                *(f"{found[kind]['ns']:.2f}" for kind in KINDS),
                *(f"{found[kind]['ns'] / numpy['ns']:.2f}" for kind in KINDS[1:]),
                f"{numpy['ns'] * k / 1e6:.1f}",
                *(f"{found[kind]['held']:.1f} / {found[kind]['peak']:.1f}" for kind in KINDS),
            ]
        )
    notes = (
        "One process per cell; Simpson, 8 layers, float32 parameters, a store without "
        "per-parameter arrays. ns/param: the core's time per step (its own arithmetic, a "
        "fresh copy of the gradient per evaluation, store flushes and close). numpy is the "
        "host path (float64 vectors); torch and JAX keep θ, Δ, the sums and A in the "
        "parameters' dtype where the gradients are (here the CPU) with float64-accurate "
        "sums. K-vectors: resident memory LCA holds between steps / at its peak, in units "
        "of 4·K bytes (the issue's goal: ≤ 5)."
    )
    header = [
        "K",
        "steps",
        *(f"{kind} ns/param" for kind in KINDS),
        *(f"{kind} ÷ numpy" for kind in KINDS[1:]),
        "numpy ms/step",
        *(f"{kind} K-vectors held / peak" for kind in KINDS),
    ]
    return "Core overhead per step (no gradient passes), host vs device", header, rows, notes
