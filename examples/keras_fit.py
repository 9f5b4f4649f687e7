"""Keras `model.fit`: one callback, the model and the fit call unchanged.

python examples/keras_fit.py [--steps 60] [--out RUN]
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # or "jax": the same callback works

import keras
from _common import arguments, digits
from lca_tensorflow import LCACallback

args = arguments(__doc__)
x, y, x_eval, y_eval = digits()
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(100, "relu"), keras.layers.Dense(10)]
)
model.compile(
    keras.optimizers.SGD(0.1, momentum=0.9),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
# loss: the compiled one; optimizer=True splits each step by the compiled optimizer's terms
callback = LCACallback((x_eval, y_eval), args.out, progress=False, optimizer=True)
model.fit(
    x[: 64 * args.steps],
    y[: 64 * args.steps],
    batch_size=64,
    epochs=1,
    verbose=0,
    callbacks=[callback],
)
print(callback.summary())
