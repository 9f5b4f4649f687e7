"""The Keras optimizer split under KERAS_BACKEND=jax: the shared Keras tests, and Keras'
stateless loop, whose optimizer variables are values given to ``tracker.update``."""

import os
import warnings

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") != "jax":
    pytest.skip("runs in the tox keras-jax env (KERAS_BACKEND=jax)", allow_module_level=True)

import jax
import keras
from lca_tensorflow import Tracker

from lca_core.errors import AccuracyWarning
from tests.tensorflow.test_parts import (  # noqa: F401  (the shared Keras tests)
    OPTIMIZERS,
    flat,
    mlp,
    test_each_part_is_the_update_rules_own,
    test_fit_with_the_compiled_optimizer_splits_and_trains_the_same,
    test_gradient_accumulation_is_refused,
)


@pytest.mark.parametrize("kind", ["nesterov", "adamw-amsgrad"])
def test_the_stateless_loop_splits_from_the_optimizer_variables(kind):
    x = np.random.default_rng(1).normal(size=(60, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model, opt = mlp(), OPTIMIZERS[kind]()
    opt.build(model.trainable_variables)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_of(values, x, y):
        out, _ = model.stateless_call(values, [], x, training=True)
        return ce(y, out)

    tracker = Tracker(model, ce, (x, y), optimizer=opt)
    values = [v.value for v in model.trainable_variables]
    opt_vars = [v.value for v in opt.variables]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        for i in range(4):
            grads = jax.grad(loss_of)(values, x[15 * i : 15 * i + 15], y[15 * i : 15 * i + 15])
            new, new_opt_vars = opt.stateless_apply(opt_vars, grads, values)
            r = tracker.update(values, new, opt_state=(opt_vars, new_opt_vars))
            values, opt_vars = new, new_opt_vars
            np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, atol=1e-12)
            assert (np.abs(r.part_layer_lca[1]).sum() > 0) == (i > 0)
            assert np.abs(r.part_layer_lca[2]).sum() > 0
    tracker.close()
