"""Keras optimizers split into gradient, momentum and weight-decay parts (DESIGN §13).

Framework-neutral (keras.ops only): the tox `tensorflow` env runs it on TensorFlow, and
tests/keras_jax imports it for JAX. The expected parts come from Keras' update rules
written out here, fed synthetic gradients, split by linearity."""

import warnings

import keras
import numpy as np
import pytest
from lca_tensorflow import LCACallback
from lca_tensorflow.splitters import make_splitter

from lca_core import PARTS, UnsupportedOptimizerError, open_run
from lca_core.errors import AccuracyWarning

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.8, nesterov=True, weight_decay=0.05),
    "adam": lambda: keras.optimizers.Adam(0.01, weight_decay=0.1),
    "adamw-amsgrad": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1, amsgrad=True),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01, weight_decay=0.1),
    "rmsprop-centered-momentum": lambda: keras.optimizers.RMSprop(
        0.01, momentum=0.9, centered=True, weight_decay=0.05
    ),
}


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, "tanh", name="a"),
            keras.layers.Dense(3, name="b"),
        ]
    )


def flat(values):
    return np.concatenate(
        [np.asarray(keras.ops.convert_to_numpy(v), np.float64).ravel() for v in values]
    )


def expected(opt, g, theta, m0, v0, t):
    """Keras' SGD / Adam step, its terms apart: decoupled decay θ ← θ − lr·λ·θ first."""
    lr, wd = float(opt.learning_rate), float(opt.weight_decay or 0.0)
    decay = -lr * wd * theta
    if isinstance(opt, keras.optimizers.SGD):
        mu = float(opt.momentum)
        if opt.nesterov:  # m_t = μ m − lr g; the step μ m_t − lr g
            return {"gradient": -lr * (1 + mu) * g, "momentum": mu * mu * m0, "weight_decay": decay}
        return {"gradient": -lr * g, "momentum": mu * m0, "weight_decay": decay}
    if isinstance(opt, keras.optimizers.RMSprop):  # v0: the velocity, m0: (momentum, ḡ)
        rho, mu = opt.rho, float(opt.momentum)
        momentum, average = m0
        v = rho * v0 + (1 - rho) * g**2
        if opt.centered:
            v = v - (rho * average + (1 - rho) * g) ** 2
        increment = lr * g / np.sqrt(v + opt.epsilon)
        return {"gradient": -increment, "momentum": -mu * momentum, "weight_decay": decay}
    b1, b2, eps = opt.beta_1, opt.beta_2, opt.epsilon
    v = b2 * v0 + (1 - b2) * g**2
    if opt.amsgrad:
        v = np.maximum(v, v0)  # v_hat: the running max (v0 holds it here)
    scale = -lr * np.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(v) + eps)
    return {"gradient": scale * (1 - b1) * g, "momentum": scale * b1 * m0, "weight_decay": decay}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_each_part_is_the_update_rules_own(kind):
    model, opt = mlp(), OPTIMIZERS[kind]()
    variables = model.trainable_variables
    splitter = make_splitter(opt, variables)
    rng = np.random.default_rng(0)
    k = sum(int(np.prod(v.shape)) for v in variables)
    m0 = v0 = np.zeros(k)
    if isinstance(opt, keras.optimizers.RMSprop):
        m0 = (np.zeros(k), np.zeros(k))  # its momentum and its average gradient
    for t in range(1, 4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        g, theta = flat(grads), flat(variables)
        splitter.before(theta)
        opt.apply(grads, variables)
        parts = splitter.after()
        delta = flat(variables) - theta
        parts.setdefault("gradient", delta - parts["momentum"] - parts["weight_decay"])
        want = expected(opt, g, theta, m0, v0, t)
        for name in PARTS:
            np.testing.assert_allclose(parts[name], want[name], rtol=1e-4, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(
            sum(want.values()), flat(variables) - theta, rtol=1e-3, atol=1e-6
        )
        if isinstance(opt, keras.optimizers.RMSprop):
            momentum, average = m0
            increment = -want["gradient"]
            v_new = opt.rho * v0 + (1 - opt.rho) * g**2
            m0 = (float(opt.momentum) * momentum + increment, opt.rho * average + (1 - opt.rho) * g)
            v0 = v_new
        elif isinstance(opt, keras.optimizers.SGD):
            m0 = float(opt.momentum) * m0 - float(opt.learning_rate) * g
        else:
            m0 = opt.beta_1 * m0 + (1 - opt.beta_1) * g
            v_new = opt.beta_2 * v0 + (1 - opt.beta_2) * g**2
            v0 = np.maximum(v_new, v0) if opt.amsgrad else v_new


def fit(tmp_path, name, optimizer, split):
    x = np.random.default_rng(1).normal(size=(96, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    model = mlp()
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    options = {"optimizer": True} if split else {}
    callback = LCACallback((x, y), tmp_path / name, **options)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
    return model, open_run(tmp_path / name)


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_fit_with_the_compiled_optimizer_splits_and_trains_the_same(tmp_path, kind):
    plain, _ = fit(tmp_path, "plain", OPTIMIZERS[kind](), split=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        model, run = fit(tmp_path, "split", OPTIMIZERS[kind](), split=True)
    np.testing.assert_array_equal(flat(plain.trainable_variables), flat(model.trainable_variables))
    parts = run.part_layer_lca
    assert run.parts == list(PARTS) and parts.shape == (6, 3, 2)
    assert run.config["optimizer"] == f"keras.optimizers.{type(model.optimizer).__name__}"
    np.testing.assert_allclose(parts.sum(axis=1), run.layer_lca, atol=1e-12)
    assert np.abs(parts[1:, 1]).sum() > 0 and np.abs(parts[:, 2]).sum() > 0


def test_gradient_accumulation_is_refused():
    model = mlp()
    with pytest.raises(UnsupportedOptimizerError, match="gradient_accumulation_steps"):
        make_splitter(
            keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), model.trainable_variables
        )
    with pytest.raises(UnsupportedOptimizerError, match=r"keras\.optimizers\.Adam.*register"):
        make_splitter(keras.optimizers.Adagrad(0.1), model.trainable_variables)
