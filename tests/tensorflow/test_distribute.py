"""Keras under tf.distribute: the LCACallback inside a MirroredStrategy over two logical CPU
devices gives the LCA it gives without a strategy."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from lca_core import open_run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]  # before TF starts: two logical CPUs
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from lca_tensorflow import LCACallback

    path, mirrored = sys.argv[1], sys.argv[2] == "mirrored"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else None
    with strategy.scope() if strategy else tf.name_scope("plain"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu", name="fc1"),
                                  keras.layers.Dense(3, name="fc2")])
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,
              callbacks=[LCACallback((x, y), path, progress=False, store_params=True)])
    print("replicas", model.distribute_strategy.num_replicas_in_sync)
    """
)


def _fit(path: Path, mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_mirrored_strategy_gives_the_lca_of_no_strategy(tmp_path):
    assert "replicas 1" in _fit(tmp_path / "plain", "plain")
    assert "replicas 2" in _fit(tmp_path / "mirrored", "mirrored")
    plain, mirrored = open_run(tmp_path / "plain"), open_run(tmp_path / "mirrored")
    assert plain.steps == mirrored.steps == 8
    # the trajectories differ only by the all-reduce of two half-batch gradients (float32)
    np.testing.assert_allclose(mirrored.losses, plain.losses, rtol=1e-6)
    scale = np.abs(plain.layer_lca).max()
    np.testing.assert_allclose(mirrored.layer_lca, plain.layer_lca, atol=1e-5 * scale)
    np.testing.assert_allclose(
        mirrored.array("param_lca"), plain.array("param_lca"), atol=1e-5 * scale
    )
    assert mirrored.summary().budget_used < 0.01
