"""LCA time per step ÷ (2 × one hand-written jitted full-set gradient pass), JAX."""

from __future__ import annotations

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import HEADER, REPEATS, ratio_rows, timings
from lca_jax import Tracker


def init(sizes: tuple[int, ...], seed: int = 0) -> dict:
    key, params = jax.random.PRNGKey(seed), {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        key, k = jax.random.split(key)
        params[f"fc{i}"] = {
            "kernel": jax.random.normal(k, (a, b)) / np.sqrt(a),
            "bias": jnp.zeros(b),
        }
    return params


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    n = len(params)
    for i in range(n):
        x = x @ params[f"fc{i}"]["kernel"] + params[f"fc{i}"]["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return optax.softmax_cross_entropy_with_integer_labels(x, y)


def measure(sizes: tuple[int, ...], x: np.ndarray, y: np.ndarray, steps: int) -> dict:
    params = init(sizes)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    hand = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, xd, yd).mean()))
    jax.block_until_ready(hand(params))
    opt = optax.sgd(0.05, momentum=0.9)
    state = opt.init(params)

    @jax.jit
    def step(p, s, xb, yb):
        g = jax.grad(lambda q: loss_fn(q, xb, yb).mean())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    tracker = Tracker(loss_fn, params, (x, y))
    tracker.start(params)
    rng = np.random.default_rng(0)
    passes, lca, panels = [], [], []
    for i in range(steps + 2):
        start = time.perf_counter()
        jax.block_until_ready(hand(params))
        passes.append(time.perf_counter() - start)
        idx = rng.integers(0, len(x), 250)
        new, state = step(params, state, x[idx], y[idx])
        jax.block_until_ready(new)
        start = time.perf_counter()
        result = tracker.update(params, new)
        if i >= 2:  # the first updates compile
            lca.append(time.perf_counter() - start)
            panels.append(result.panels)
        params = new
    tracker.close()
    return timings(passes, lca, panels)


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 10 if quick else 40
    rows = ratio_rows(measure, quick, steps, np.int32)
    notes = (
        f"jax {jax.__version__} on {jax.devices()[0].platform}; median of {steps} steps "
        f"after compilation. Ratio: the median of {REPEATS} measurements (each a fresh "
        "model and tracker) and their range. The hand-written pass takes the whole set at "
        "once; lca evaluates Simpson's two nodes in one vmapped call (scanning chunks of "
        "4096 with compensated sums). Goal ≤ 1.10."
    )
    return (
        "JAX: LCA step vs two hand-written jitted gradient passes",
        HEADER,
        rows,
        notes,
    )
