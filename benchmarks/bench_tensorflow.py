"""LCA time per step ÷ (2 × one hand-written tf.function full-set gradient pass), Keras/TF."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from common import HEADER, REPEATS, ratio_rows, timings
from lca_tensorflow import Tracker


def mlp(sizes: tuple[int, ...]) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
    model = keras.Sequential([*layers, keras.layers.Dense(sizes[-1])])
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def measure(sizes: tuple[int, ...], x: np.ndarray, y: np.ndarray, steps: int) -> dict:
    model = mlp(sizes)
    xt, yt = tf.constant(x), tf.constant(y)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def hand() -> tuple:
        with tf.GradientTape() as tape:
            value = loss(yt, model(xt, training=False))
        return value, tape.gradient(value, model.trainable_variables)

    hand()
    tracker = Tracker(model, None, (x, y))
    tracker.begin()
    rng = np.random.default_rng(0)
    passes, lca, panels = [], [], []
    for i in range(steps + 2):
        start = time.perf_counter()
        hand()
        passes.append(time.perf_counter() - start)
        idx = rng.integers(0, len(x), 250)
        model.train_on_batch(x[idx], y[idx])
        start = time.perf_counter()  # the step's allocation and the next step's begin
        result = tracker.end()
        tracker.begin()
        if i >= 2:
            lca.append(time.perf_counter() - start)
            panels.append(result.panels)
    tracker.close()
    return timings(passes, lca, panels)


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 10 if quick else 40
    rows = ratio_rows(measure, quick, steps, np.int64)
    notes = (
        f"tensorflow {tf.__version__}, keras {keras.__version__}, CPU; median of {steps} "
        f"steps after tracing. Ratio: the median of {REPEATS} measurements (each a fresh "
        "model and tracker) and their range. The hand-written pass takes the whole set at "
        "once; lca evaluates a step's nodes in one graph call (variables copied aside, "
        "each θ assigned, chunks of 4096 scanned, sums in float64, variables put back). "
        "Goal ≤ 1.10."
    )
    return (
        "TensorFlow/Keras: LCA step vs two hand-written tf.function gradient passes",
        HEADER,
        rows,
        notes,
    )
