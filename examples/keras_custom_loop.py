"""A Keras custom training loop (GradientTape): `with tracker.step()` around the update.

python examples/keras_custom_loop.py [--steps 60] [--out RUN]
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from _common import arguments, digits
from lca_tensorflow import Tracker

args = arguments(__doc__)
x, y, x_eval, y_eval = digits()
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(100, "relu"), keras.layers.Dense(10)]
)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
optimizer = keras.optimizers.Adam(1e-3)
tracker = Tracker(model, loss_fn, (x_eval, y_eval), args.out)
rng = np.random.default_rng(0)
for _ in range(args.steps):
    idx = rng.integers(0, len(x), 64)
    with tf.GradientTape() as tape:
        loss = loss_fn(y[idx], model(x[idx], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    with tracker.step():
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
print(tracker.close())
