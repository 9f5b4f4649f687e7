"""``lca demo --backend jax``: the shared digits MLP (see :mod:`lca_core.tools.demo`) as a pure
function, trained with optax, tracked with ``lca_jax.Tracker``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lca_core.engine.summary import Summary
from lca_core.tools.demo import LAYERS, Experiment

from . import optimizers
from .tracker import Tracker


def forward(params: dict[str, Any], x: jax.Array) -> jax.Array:
    for i, name in enumerate(LAYERS):
        x = x @ params[name]["kernel"] + params[name]["bias"]
        if i < len(LAYERS) - 1:
            x = jax.nn.relu(x)
    return x


def loss_fn(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    """Each example's cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y)


def train(exp: Experiment) -> Summary:
    """The demo with optax and ``tracker.update(params, new_params)``."""
    data = exp.data
    params = {
        name: {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}
        for name, (k, b) in exp.weights.items()
    }
    # optax's adam / sgd, with the hyperparameters in the state: lca splits their steps
    optimizer = optimizers.adam(exp.lr) if exp.adam else optimizers.sgd(exp.lr, momentum=0.9)
    opt_state = optimizer.init(params)
    y = data.y.astype(np.int32)

    @jax.jit
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any]:
        grads = jax.grad(lambda p: loss_fn(p, x, y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    val = (data.xv, data.yv.astype(np.int32))
    tracker = Tracker(
        loss_fn, params, (data.x, y), exp.out, val_data=val, optimizer=optimizer, **exp.options
    )
    tracker.expected_steps = exp.args.steps  # the forecast projects the whole run
    for idx in exp.batches:
        new_params, new_state = step(params, opt_state, data.x[idx], y[idx])
        tracker.update(params, new_params, opt_state=(opt_state, new_state))
        params, opt_state = new_params, new_state
    return tracker.close()
