"""optax updates split into gradient, momentum and weight-decay parts (DESIGN §13).

The expected parts come from the update rules written out here (as optax documents
sgd/adam/adamw, weight decay as in lca_jax.optimizers), split by linearity."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lca_jax import Tracker
from lca_jax import optimizers as lca_opt

from lca_core import PARTS, UnsupportedOptimizerError
from lca_core.errors import AccuracyWarning

jax.config.update("jax_enable_x64", False)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    params = {
        "a": {"w": jnp.asarray(rng.normal(size=(6, 5)) / 3, jnp.float32), "b": jnp.zeros(5)},
        "b": {"w": jnp.asarray(rng.normal(size=(5, 2)) / 3, jnp.float32), "b": jnp.zeros(2)},
    }
    return x, y, params


def loss_fn(p, x, y):
    h = jnp.tanh(x @ p["a"]["w"] + p["a"]["b"])
    return optax.softmax_cross_entropy_with_integer_labels(h @ p["b"]["w"] + p["b"]["b"], y).mean()


def flat(tree):
    return np.concatenate(
        [np.asarray(v, np.float64).ravel() for v in jax.tree_util.tree_leaves(tree)]
    )


def sgd_rule(lr, mu, g, decay, carried, nesterov):
    """optax.trace then −lr: t = g' + μ t_{t−1}; the step −lr·t, or −lr(g' + μ t)."""
    gp = g + decay
    t = gp + mu * carried
    return -lr * (gp + mu * t if nesterov else t)


def adam_parts(lr, b1, b2, eps, wd, g, theta, m0, v0, t, decoupled):
    gp = g if decoupled else g + wd * theta
    v = b2 * v0 + (1 - b2) * gp**2
    scale = -lr / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps)
    decay = -lr * wd * theta if decoupled else scale * (1 - b1) * wd * theta
    return {"gradient": scale * (1 - b1) * g, "momentum": scale * b1 * m0, "weight_decay": decay}


CASES = {
    "sgd-momentum": (lambda: lca_opt.sgd(0.3, 0.9, weight_decay=0.01), "sgd"),
    "nesterov": (lambda: lca_opt.sgd(0.3, 0.8, nesterov=True, weight_decay=0.05), "sgd"),
    "adam-l2": (lambda: lca_opt.adam(0.05, weight_decay=0.1), "adam"),
    "adamw": (lambda: lca_opt.adamw(0.05, weight_decay=0.1), "adamw"),
    "rmsprop": (lambda: lca_opt.rmsprop(0.01, momentum=0.9, weight_decay=0.05), "rmsprop"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_part_is_the_update_rules_own(case):
    make, family = CASES[case]
    tx = make()
    x, y, params = problem()
    state = tx.init(params)
    splitter = lca_opt.make_splitter(tx)
    carried = m0 = v0 = np.zeros(flat(params).size)
    for step in range(1, 4):
        g = jax.grad(loss_fn)(params, x[:40], y[:40])
        updates, new_state = tx.update(g, state, params)
        new = optax.apply_updates(params, updates)
        theta, gf = flat(params), flat(g)
        splitter.before(theta, state)
        parts = splitter.after(new_state)
        if family == "sgd":
            nesterov, mu, wd, lr = (
                case == "nesterov",
                0.9 if case != "nesterov" else 0.8,
                0.01 if case != "nesterov" else 0.05,
                0.3,
            )
            want = {
                "gradient": sgd_rule(lr, mu, gf, 0 * gf, 0 * gf, nesterov),
                "weight_decay": sgd_rule(lr, mu, 0 * gf, wd * theta, 0 * gf, nesterov),
                "momentum": sgd_rule(lr, mu, 0 * gf, 0 * gf, carried, nesterov),
            }
            carried = gf + wd * theta + mu * carried
        elif family == "rmsprop":  # optax: ν, then t = μ t + g'/√(ν + ε), the step −lr·t
            gp = gf + 0.05 * theta
            v0 = 0.9 * v0 + 0.1 * gp**2
            scale = -0.01 / np.sqrt(v0 + 1e-8)
            want = {
                "gradient": scale * gf,
                "weight_decay": scale * 0.05 * theta,
                "momentum": -0.01 * 0.9 * carried,
            }
            carried = 0.9 * carried + gp / np.sqrt(v0 + 1e-8)
        else:
            decoupled = family == "adamw"
            want = adam_parts(0.05, 0.9, 0.999, 1e-8, 0.1, gf, theta, m0, v0, step, decoupled)
            gp = gf if decoupled else gf + 0.1 * theta
            m0, v0 = 0.9 * m0 + 0.1 * gp, 0.999 * v0 + 0.001 * gp**2
        for name in PARTS:
            np.testing.assert_allclose(parts[name], want[name], rtol=2e-4, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(
            sum(want[n] for n in PARTS), flat(new) - theta, rtol=1e-3, atol=1e-7
        )
        params, state = new, new_state


def train(tx, steps=5, store=None, clip=None, **options):
    x, y, params = problem()
    full = optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
    state = full.init(params)
    tracker = Tracker(loss_fn, params, (x, y), store, optimizer=tx, **options)
    results = []
    for i in range(steps):
        rows = slice(20 * i % 120, 20 * i % 120 + 20)
        g = jax.grad(loss_fn)(params, x[rows], y[rows])
        updates, new_state = full.update(g, state, params)
        new = optax.apply_updates(params, updates)
        results.append(tracker.update(params, new, opt_state=(state, new_state)))
        params, state = new, new_state
    tracker.close()
    return results, params


@pytest.mark.parametrize("case", ["sgd-momentum", "adamw"])
def test_the_tracker_splits_each_step_and_the_training_is_unchanged(case):
    tx = CASES[case][0]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        results, params = train(tx, clip=0.5)
    for r in results:
        np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, atol=1e-12)
    assert np.abs(np.array([r.part_layer_lca[1] for r in results[1:]])).sum() > 0
    assert np.abs(np.array([r.part_layer_lca[2] for r in results])).sum() > 0
    # the same training without lca
    x, y, plain = problem()
    full = optax.chain(optax.clip_by_global_norm(0.5), tx)
    state = full.init(plain)
    for i in range(5):
        rows = slice(20 * i % 120, 20 * i % 120 + 20)
        updates, state = full.update(jax.grad(loss_fn)(plain, x[rows], y[rows]), state, plain)
        plain = optax.apply_updates(plain, updates)
    np.testing.assert_array_equal(flat(plain), flat(params))


def test_a_plain_optax_optimizer_is_refused_with_the_way_that_works():
    x, y, params = problem()
    with pytest.raises(UnsupportedOptimizerError, match=r"lca_jax\.optimizers\.sgd"):
        Tracker(loss_fn, params, (x, y), optimizer=optax.sgd(0.1))


def test_nnx_optimizer_is_split_in_place():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.a, self.b = nnx.Linear(6, 5, rngs=rngs), nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    x, y, _ = problem()
    model = MLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, lca_opt.adamw(0.05, weight_decay=0.1), wrt=nnx.Param)
    per_example = lambda m, x, y: optax.softmax_cross_entropy_with_integer_labels(m(x), y)  # noqa: E731
    tracker = Tracker(per_example, model, (x, y), optimizer=opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        for i in range(3):
            grads = nnx.grad(lambda m: per_example(m, x[:40], y[:40]).mean())(model)
            with tracker.step():
                opt.update(model, grads)
            r = tracker.last
            np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, atol=1e-12)
            assert (np.abs(r.part_layer_lca[1]).sum() > 0) == (i > 0)
    tracker.close()
