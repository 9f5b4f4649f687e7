import glob
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from lca_tensorflow import LCACallback, TFBackend

from lca_core import create_backend, open_run
from tests.checks import assert_every_step_within_tol
from tests.tensorflow.conftest import compiled, mlp, small_cnn

FIT = {"batch_size": 100, "verbose": 0}


def test_fit_with_the_callback_allocates_every_step(digits, tmp_path):
    x, y = digits
    model = mlp(dropout=0.3)
    cb = LCACallback(
        (x, y), tmp_path / "run", val_data=(x[:100], y[:100]), per_class=True, store_params=True
    )
    history = model.fit(x, y, epochs=2, shuffle=True, callbacks=[cb], **FIT)
    run = open_run(tmp_path / "run")
    assert run.steps == 2 * 6
    assert_every_step_within_tol(run)
    assert cb.summary().budget_used < 0.01 and cb.summary().loss_change < -0.3
    np.testing.assert_allclose(run.array("class_layer_lca").sum(1), run.layer_lca, atol=1e-9)
    assert run.layers == ["fc1", "fc2"]
    epochs = [slice(0, 6), slice(6, 12)]  # the epoch logs: each epoch's sums
    assert history.history["lca/sum_lca"] == pytest.approx(
        [run.layer_lca[e].sum() for e in epochs], rel=1e-9
    )
    for j, layer in enumerate(run.layers):
        assert history.history[f"lca/layer/{layer}"] == pytest.approx(
            [run.layer_lca[e, j].sum() for e in epochs], rel=1e-9
        )
        assert history.history[f"lca/val/layer/{layer}"] == pytest.approx(
            [run.array("val_layer_lca")[e, j].sum() for e in epochs], rel=1e-9
        )
    assert history.history["lca/loss_change"] == pytest.approx(
        [run.losses[6] - run.losses[0], run.losses[12] - run.losses[6]], rel=1e-9
    )
    assert history.history["lca/budget_used"][-1] == pytest.approx(cb.summary().budget_used)
    assert cb.tracker.backend.traces == 2  # train and validation set: once each, never again
    assert cb.tracker.expected_steps == 12  # from fit's steps × epochs, for the forecast
    assert cb.tracker.allocator.forecast.steps_ahead == 10


@pytest.mark.parametrize("bn_policy", ["batch", "running"])
def test_cnn_with_batchnorm(digits, tmp_path, bn_policy):
    x, y = digits
    model = small_cnn()
    cb = LCACallback((x, y), tmp_path / "run", bn_policy=bn_policy, batch_size=200)
    model.fit(x, y, epochs=2, callbacks=[cb], **FIT)
    run = open_run(tmp_path / "run")
    assert_every_step_within_tol(run)
    assert cb.summary().budget_used < 0.01
    assert (np.any(run.drift != 0)) == (bn_policy == "running")
    assert run.layers == ["conv", "bn", "fc"]


def test_training_is_identical_with_and_without_the_callback(digits):
    x, y = digits
    plain, tracked = small_cnn(seed=4), small_cnn(seed=4)
    keras.utils.set_random_seed(1)
    plain.fit(x, y, epochs=1, **FIT)
    keras.utils.set_random_seed(1)
    tracked.fit(x, y, epochs=1, callbacks=[LCACallback((x, y))], **FIT)
    for a, b in zip(plain.weights, tracked.weights, strict=True):  # incl. BN moving stats
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(plain.optimizer.variables, tracked.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frozen_layers_are_left_out_and_do_not_move(digits, tmp_path):
    x, y = digits
    model = mlp()
    model.get_layer("fc1").trainable = False
    compiled(model)
    before = model.get_layer("fc1").kernel.numpy().copy()
    cb = LCACallback((x, y), tmp_path / "run", store_params=True)
    model.fit(x, y, epochs=1, callbacks=[cb], **FIT)
    run = open_run(tmp_path / "run")
    assert run.layers == ["fc2"]  # a frozen layer's LCA is zero by construction
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), before)
    assert cb.summary().budget_used < 0.01


def test_steps_per_execution_blocks_are_lca_steps(digits, tmp_path):
    x, y = digits
    model = compiled(mlp(), steps_per_execution=3)
    cb = LCACallback((x, y), tmp_path / "run")
    model.fit(x, y, epochs=1, callbacks=[cb], **FIT)
    assert open_run(tmp_path / "run").steps == 2  # 6 batches in blocks of 3


def test_initial_epoch_resumes_onto_the_store(digits, tmp_path):
    x, y = digits
    model = mlp()
    model.fit(x, y, epochs=1, callbacks=[LCACallback((x, y), tmp_path / "run")], **FIT)
    with pytest.raises(FileExistsError, match="resume=True"):  # never appended to silently
        model.fit(x, y, epochs=1, callbacks=[LCACallback((x, y), tmp_path / "run")], **FIT)
    with pytest.warns(DeprecationWarning, match="eval_data"):  # the 0.1 name still works
        cb = LCACallback(eval_data=(x, y), store=tmp_path / "run", resume=True)
    model.fit(x, y, initial_epoch=1, epochs=3, callbacks=[cb], **FIT)
    run = open_run(tmp_path / "run")
    assert run.steps == 18
    np.testing.assert_array_equal(run.step_index, np.arange(18))
    np.testing.assert_allclose(run.layer_lca.sum(1) + run.residuals, np.diff(run.losses), atol=1e-9)


def test_logs_reach_keras_tensorboard(digits, tmp_path):
    x, y = digits
    model = mlp()
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))
    model.fit(x, y, epochs=1, callbacks=[LCACallback((x, y)), board], **FIT)
    tags = set()
    for path in glob.glob(str(tmp_path / "tb" / "train" / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_lca/residual", "epoch_lca/layer/fc1", "epoch_lca/budget_used"} <= tags


def test_backend_is_found_by_name_and_by_model(digits):
    x, y = digits
    model = mlp()
    assert isinstance(create_backend(model, None, (x, y)), TFBackend)
    with pytest.raises(ValueError, match="600 inputs but 3 targets"):
        TFBackend(model, None, (x, y[:3]))
    with pytest.raises(TypeError, match="compile the model"):
        TFBackend(keras.Sequential([keras.Input((64,)), keras.layers.Dense(2)]), None, (x, y))


def test_an_unsupported_keras_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(RuntimeError, match=r"lca_torch\.Tracker"):
        LCACallback((np.zeros((2, 64)), np.zeros(2)))


def test_importing_lca_tensorflow_imports_no_other_framework():
    code = (
        "import sys, lca_tensorflow; lca_tensorflow.TFBackend; "
        "print(sorted({'torch', 'jax'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_allocate_one_step_in_one_call(digits):
    from lca_tensorflow import allocate

    x, y = digits
    model = mlp()
    before = [v.numpy() for v in model.trainable_variables]
    model.fit(x[:100], y[:100], epochs=1, batch_size=100, verbose=0)
    after = [v.numpy() for v in model.trainable_variables]
    out = allocate(model, None, (x, y), before, after)
    assert [a.shape for a in out.lca] == [b.shape for b in before]
    total = sum(a.sum() for a in out.lca)
    assert total + out.residual == pytest.approx(
        out.result.loss_after - out.result.loss_before, abs=1e-9
    )
    assert abs(out.residual) <= 1e-3 and total < 0  # one step of training lowered the loss


@pytest.mark.parametrize("bn_policy", ["batch", "running"])
def test_a_pass_that_fails_midway_leaves_every_variable_as_it_was(digits, bn_policy):
    """The pass assigns θ (and the BatchNorm state) to the model's variables inside one
    graph call; when the call fails after that — here a loss that checks its logits, at a
    θ of NaN — the variables are the model's own again when the error reaches the user."""
    x, y = digits

    def checked(y_true, logits):
        logits = tf.debugging.check_numerics(logits, "logits")
        return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)

    model = small_cnn()
    backend = TFBackend(model, checked, (x, y), bn_policy=bn_policy)
    before = [v.numpy().copy() for v in model.variables]
    snap = backend.snapshot()
    (ok,) = backend.evaluate([snap.theta], state=snap.state)
    assert np.isfinite(ok.loss)
    with pytest.raises(tf.errors.InvalidArgumentError, match="logits"):
        backend.evaluate([snap.theta, np.full_like(snap.theta, np.nan)], state=snap.state)
    for v, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    (again,) = backend.evaluate([snap.theta], state=snap.state)
    assert again.loss == ok.loss
