"""Cross-framework conformance: the same trajectory must give the same allocations.

Two reference problems are defined here in plain numpy — a tanh MLP 16-12-4 and a small
CNN (8×8×1 → conv 3×3, 4 channels, tanh → dense 4), in a *canonical* orientation
(kernels (…, in, out), images NHWC) — with fixed weights, data and a trajectory θ_0…θ_T.
A backend joins the comparison through an :class:`Adapter` that says which of its
parameters holds each canonical array and how to reorient it. :func:`run_adapter` replays
the trajectory through the backend into a run store; :func:`compare` checks losses,
per-parameter LCA, residuals, panel counts and the store schema against another backend.
See docs/backends.md for running this against a new backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..allocator import Allocator
from ..arrays import like
from ..protocol import Backend
from ..storage.run import open_run

Orient = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Problem:
    """Data, canonical parameter shapes and a trajectory (list of {name: array})."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    shapes: dict[str, tuple[int, ...]]
    trajectory: list[dict[str, np.ndarray]]


def reference_problem(kind: str = "mlp", steps: int = 6, seed: int = 0) -> Problem:
    """A fixed problem; steps are random moves of a few percent of each weight's scale."""
    rng = np.random.default_rng(seed)
    n, classes = 120, 4
    if kind == "mlp":
        x = rng.normal(size=(n, 16)).astype(np.float32)
        shapes = {
            "fc0.kernel": (16, 12),
            "fc0.bias": (12,),
            "fc1.kernel": (12, 4),
            "fc1.bias": (4,),
        }
    elif kind == "cnn":
        x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
        shapes = {
            "conv.kernel": (3, 3, 1, 4),
            "conv.bias": (4,),
            "fc.kernel": (256, 4),
            "fc.bias": (4,),
        }
    else:
        raise ValueError(f"kind must be 'mlp' or 'cnn', not {kind!r}")
    y = rng.integers(0, classes, size=n).astype(np.int64)
    theta = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        theta[name] = (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
    trajectory = [theta]
    for _ in range(steps):
        step = {
            k: (0.05 * np.std(v) + 0.01) * rng.normal(size=v.shape)
            for k, v in trajectory[-1].items()
        }
        trajectory.append({k: (v + step[k]).astype(np.float32) for k, v in trajectory[-1].items()})
    return Problem(kind, x, y, shapes, trajectory)


@dataclass
class Adapter:
    """How a backend holds the canonical parameters.

    ``mapping[canonical name] = (backend parameter name, to_backend, to_canonical)``, the
    two functions reorienting an array (identity when the layouts agree).
    """

    name: str
    backend: Backend
    mapping: dict[str, tuple[str, Orient, Orient]]

    def theta(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """Canonical parameters → the backend's flat θ (its layout order and dtype)."""
        by_name = {bname: to_b(params[c]) for c, (bname, to_b, _) in self.mapping.items()}
        layout = self.backend.layout
        missing = {p.name for p in layout.params} - set(by_name)
        if missing:
            raise ValueError(f"{self.name}: the adapter maps no canonical array to {missing}")
        return np.concatenate(
            [np.asarray(by_name[p.name]).reshape(p.shape).ravel() for p in layout.params]
        )

    def canonical(self, flat: np.ndarray, problem: Problem) -> np.ndarray:
        """A (..., K) array in the backend's layout → canonical order and orientation."""
        layout = self.backend.layout
        parts = []
        for c, (bname, _, to_c) in self.mapping.items():
            spec = layout.param(bname)
            block = flat[..., layout.slice_of(bname)].reshape(*flat.shape[:-1], *spec.shape)
            lead = flat.shape[:-1]
            oriented = np.stack([to_c(b) for b in block.reshape(-1, *spec.shape)])
            parts.append(oriented.reshape(*lead, int(np.prod(problem.shapes[c]))))
        return np.concatenate(parts, axis=-1)


def identity(a: np.ndarray) -> np.ndarray:
    return a


def transpose(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


@dataclass
class Outcome:
    """What one backend made of the problem, in canonical order."""

    name: str
    losses: np.ndarray
    lca: np.ndarray  # (T, K) canonical
    residuals: np.ndarray
    panels: np.ndarray
    schema: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)


def run_adapter(
    adapter: Adapter,
    problem: Problem,
    store: str | os.PathLike[str],
    *,
    arithmetic: str = "host",
    **options: Any,
) -> Outcome:
    """Replay the problem's trajectory through the adapter's backend into ``store``, the
    core's arithmetic on the host (numpy float64, the reference) or, with
    ``arithmetic="device"``, in the backend's own arrays (as its snapshots hold θ)."""
    template = adapter.backend.snapshot().theta if arithmetic == "device" else None

    def theta(params: Any) -> Any:
        host = adapter.theta(params)
        return host if template is None else like(host, template)

    alloc = Allocator(adapter.backend, store, store_params=True, **options)
    alloc.start(theta(problem.trajectory[0]))
    for params in problem.trajectory[1:]:
        alloc.advance(theta(params))
    alloc.close()
    run = open_run(store)
    schema = {
        name: (str(run.array(name).dtype), run.array(name).shape)
        for name in (
            "losses",
            "residuals",
            "panels",
            "converged",
            "drift",
            "layer_counts",
            "param_lca",
            "step_index",
        )
    }
    schema["param_lca"] = (schema["param_lca"][0], (run.steps, run.layout.size))
    return Outcome(
        adapter.name if arithmetic == "host" else f"{adapter.name} ({arithmetic})",
        run.losses,
        adapter.canonical(run.array("param_lca").astype(np.float64), problem),
        run.residuals,
        run.panels,
        schema,
    )


#: Tolerances for float32 models, ~10-15× what was measured (2026-11, 4 backends): losses
#: agree to 2e-7 relative (float32 rounding of a mean over 120 examples, summed in a
#: different order by each framework); per-parameter LCA Δ_i·ḡ_i inherits ḡ's float32
#: error, measured up to 7e-7 of the run's largest |LCA|; residuals up to 7e-7 nats.
LOSS_RTOL = 2e-6
LCA_ATOL_REL = 1e-5
RESIDUAL_ATOL = 1e-5


def compare(a: Outcome, b: Outcome, *, scale: float = 1.0) -> list[str]:
    """Disagreements between two outcomes (empty when they conform), the tolerances
    times ``scale``."""
    problems = []
    if not np.allclose(a.losses, b.losses, rtol=LOSS_RTOL * scale, atol=0):
        problems.append(f"losses differ: {a.losses} vs {b.losses}")
    largest = max(np.abs(a.lca).max(), np.abs(b.lca).max())
    worst = np.abs(a.lca - b.lca).max()
    if worst > LCA_ATOL_REL * scale * largest:
        problems.append(
            f"per-parameter LCA differs by {worst:.3g} (> {LCA_ATOL_REL * scale} × {largest:.3g})"
        )
    if not np.allclose(a.residuals, b.residuals, rtol=0, atol=RESIDUAL_ATOL * scale):
        problems.append(f"residuals differ: {a.residuals} vs {b.residuals}")
    if not np.array_equal(a.panels, b.panels):
        problems.append(f"panel counts differ: {a.panels} vs {b.panels}")
    if a.schema != b.schema:
        problems.append(f"store schemas differ: {a.schema} vs {b.schema}")
    return [f"{a.name} vs {b.name}: {p}" for p in problems]
