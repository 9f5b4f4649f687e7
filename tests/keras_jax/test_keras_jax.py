"""LCACallback under KERAS_BACKEND=jax (the tox `keras-jax` env: keras + jax, no tensorflow)."""

import os
import sys

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") != "jax":
    pytest.skip("runs in the tox keras-jax env (KERAS_BACKEND=jax)", allow_module_level=True)

import keras
from lca_tensorflow import LCACallback
from sklearn.datasets import load_digits

from lca_core import open_run
from tests.checks import assert_every_step_within_tol


def model(seed=0, batchnorm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,)), keras.layers.Dense(32, activation="relu", name="fc1")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    m = keras.Sequential([*layers, keras.layers.Dense(10, name="fc2")], name="mlp")
    m.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return m


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:600] / 16).astype(np.float32), y[:600].astype(np.int32)


def test_fit_under_keras_jax_uses_the_jax_backend(digits, tmp_path):
    x, y = digits
    cb = LCACallback((x, y), tmp_path / "run", per_class=True)
    tracked = model()  # each model is built and trained right after seeding: same shuffles
    history = tracked.fit(x, y, batch_size=100, epochs=2, callbacks=[cb], verbose=0)
    plain = model()
    plain.fit(x, y, batch_size=100, epochs=2, verbose=0)
    run = open_run(tmp_path / "run")
    assert run.steps == 12 and run.layers == ["fc1", "fc2"]
    assert run.metadata["policy"]["framework"] == "jax"
    assert cb.summary().budget_used < 0.01
    assert_every_step_within_tol(run)
    assert history.history["lca/layer/fc2"] == pytest.approx(
        [run.layer_lca[:6, 1].sum(), run.layer_lca[6:, 1].sum()], rel=1e-9
    )
    for a, b in zip(tracked.weights, plain.weights, strict=True):  # training unchanged
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    assert "tensorflow" not in sys.modules


def test_non_trainable_state_is_refused_with_advice(digits):
    x, y = digits
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        model(batchnorm=True).fit(x, y, epochs=1, callbacks=[LCACallback((x, y))], verbose=0)


def test_lca_demo_runs_on_keras_jax(tmp_path, capsys):
    from lca_core import open_run
    from lca_core.tools.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--backend", "keras-jax", "--out", str(out), "--steps", "3", "--frames", "2"]
    assert main(argv) == 0
    assert "LCA of 3 steps (keras-jax)" in capsys.readouterr().out
    run = open_run(out)
    assert run.steps == 3 and run.layers == ["fc1", "fc2", "fc3"]
