import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:600] / 16.0).astype(np.float32), y[:600].astype(np.int32)


def init_mlp(seed=0, sizes=(64, 32, 16, 10)):
    key = jax.random.PRNGKey(seed)
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        key, k = jax.random.split(key)
        params[f"fc{i}"] = {
            "kernel": jax.random.normal(k, (a, b)) / np.sqrt(a),
            "bias": jnp.zeros(b),
        }
    return params


def forward(params, x):
    n = len(params)
    for i in range(n):
        x = x @ params[f"fc{i}"]["kernel"] + params[f"fc{i}"]["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def mlp_loss(params, x, y):
    """Per-example cross-entropy, as optax returns it."""
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y)


def make_step(loss_fn, optimizer, donate=False):
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: loss_fn(p, x, y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def train(tracker, loss_fn, params, x, y, steps, optimizer=None, donate=False, seed=0):
    optimizer = optimizer or optax.sgd(0.1, momentum=0.9)
    step = make_step(loss_fn, optimizer, donate)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    if tracker is not None:
        tracker.start(params)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 50)
        new, opt_state = step(params, opt_state, x[idx], y[idx])
        if tracker is not None:
            tracker.update(params, new)
        params = new
    return params
