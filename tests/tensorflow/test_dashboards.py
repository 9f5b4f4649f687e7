"""LCA in the dashboards of Keras users: a tf.summary writer per step, and the epoch logs
that History, CSVLogger and Keras' TensorBoard read — each read back by its own library."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from lca_tensorflow import LCACallback

from lca_core import open_run
from lca_core.dashboards import Alerts
from tests.dashboards import (
    as_float32,
    assert_same,
    expected,
    tensorboard_scalars,
    tensorboard_texts,
)
from tests.tensorflow.conftest import mlp


def test_a_tf_summary_writer_gets_every_step_and_csvlogger_every_epoch(digits, tmp_path):
    x, y = digits
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    cb = LCACallback(
        (x, y),
        tmp_path / "run",
        eval_subset=0.5,
        optimizer=True,
        log_to=writer,
        alerts=Alerts(hurting_steps=1, over_budget=False),
    )
    model = mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), loss=model.loss)
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=100,
        verbose=0,
        callbacks=[cb, keras.callbacks.CSVLogger(str(tmp_path / "epochs.csv"))],
    )
    writer.close()
    want = expected(tmp_path / "run")
    assert "lca/layer_stderr/fc1" in want and "lca/momentum/layer/fc2" in want
    assert_same(tensorboard_scalars(tmp_path / "tb"), as_float32(want))
    if (open_run(tmp_path / "run").layer_lca > 0).any():
        assert any("raised the loss" in t for t in tensorboard_texts(tmp_path / "tb"))
    with open(tmp_path / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for tag, per_epoch in history.history.items():
        if tag.startswith("lca/"):
            assert [float(r[tag]) for r in rows] == per_epoch, tag
    # an epoch's per-layer standard error: the sum of its steps' (their bound)
    run = open_run(tmp_path / "run")
    assert history.history["lca/layer_stderr/fc2"] == pytest.approx(
        [run.layer_lca_stderr[:6, 1].sum(), run.layer_lca_stderr[6:, 1].sum()], rel=1e-9
    )
    assert np.all(np.asarray(history.history["lca/layer_stderr/fc2"]) > 0)
