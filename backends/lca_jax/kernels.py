"""The core's K-long kernels compiled for JAX arrays (:class:`lca_core.arrays.Kernels`).

JAX's eager operations move their operands from the host: a Python scalar, a slice's
bounds, a comparison's zero. Compiled, those are constants of the program, so a tracked
step moves nothing to the device (``jax.transfer_guard_host_to_device("disallow")``
holds: tests/jax/test_device.py). The scalars and bounds are static arguments: a run
compiles each kernel for the few node positions, weights and layouts it meets.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lca_core.arrays import Kernels, compensated_sum, joined, register_kernels


@partial(jax.jit, static_argnames="s")
def _node(theta0: jax.Array, delta: jax.Array, s: float) -> jax.Array:
    return delta * s + theta0


@partial(jax.jit, static_argnames=("weights", "scale"))
def _combine(xs: tuple[jax.Array, ...], weights: tuple[float, ...], scale: float) -> jax.Array:
    return Kernels.combine(Kernels(), list(zip(xs, weights, strict=True)), scale)


@jax.jit
def _total(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return compensated_sum(x.reshape(-1))


@partial(jax.jit, static_argnames="bounds")
def _segment_sums(x: jax.Array, bounds: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    parts = [compensated_sum(x[..., a:b]) for a, b in itertools.pairwise(bounds)]
    return jnp.stack([p[0] for p in parts], -1), jnp.stack([p[1] for p in parts], -1)


@partial(jax.jit, static_argnames="bounds")
def _sign_counts(x: jax.Array, bounds: tuple[int, ...]) -> jax.Array:
    def count(mask: jax.Array) -> jax.Array:
        spans = itertools.pairwise(bounds)
        return jnp.stack([jnp.sum(mask[..., a:b], axis=-1, dtype=jnp.int32) for a, b in spans], -1)

    return jnp.stack([count(x < 0), count(x > 0)], axis=-1)


@jax.jit
def _finite(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


@jax.jit
def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x))


@partial(jax.jit, static_argnames="n")
def _rows(x: jax.Array, n: int) -> list[jax.Array]:
    return [x[i] for i in range(n)]


class JaxKernels(Kernels):
    """:class:`~lca_core.arrays.Kernels` as compiled JAX programs."""

    def node(self, theta0: Any, s: float, delta: Any) -> Any:
        return _node(theta0, delta, float(s))

    def combine(self, terms: Sequence[tuple[Any, float]], scale: float) -> Any:
        xs = tuple(x for x, _ in terms)
        return _combine(xs, tuple(float(w) for _, w in terms), float(scale))

    def total(self, x: Any) -> float:
        return float(joined(_total(x)))

    def segment_sums(self, x: Any, bounds: tuple[int, ...]) -> np.ndarray:
        return joined(_segment_sums(x, tuple(bounds)))

    def sign_counts(self, x: Any, bounds: tuple[int, ...]) -> np.ndarray:
        return np.asarray(_sign_counts(x, tuple(bounds)), dtype=np.int64)

    def all_finite(self, x: Any) -> bool:
        return bool(_finite(x))

    def norm(self, x: Any) -> float:
        return float(_norm(x))

    def rows(self, x: Any) -> list[Any]:
        return list(_rows(x, int(x.shape[0])))


#: the kernels, registered for JAX arrays when lca_jax is imported
KERNELS = JaxKernels()
register_kernels(jnp.__name__, KERNELS)
