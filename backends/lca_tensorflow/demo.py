"""``lca demo --backend tensorflow`` (or ``keras-jax``): the shared digits MLP (see
:mod:`lca_core.tools.demo`) trained by an unmodified ``model.fit`` with ``LCACallback``.

The demo's batches are laid out in order and fit runs one epoch over them unshuffled, so
Keras sees exactly the batches the other frameworks see.
"""

from __future__ import annotations

import keras
import numpy as np

from lca_core.engine.summary import Summary
from lca_core.tools.demo import LAYERS, Experiment

from .callback import LCACallback


def mnist_fc(weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> keras.Model:
    layers: list[keras.layers.Layer] = [keras.Input((weights[LAYERS[0]][0].shape[0],))]
    for i, name in enumerate(LAYERS):
        activation = "relu" if i < len(LAYERS) - 1 else None
        layers.append(keras.layers.Dense(weights[name][0].shape[1], activation, name=name))
    model = keras.Sequential(layers, name="mnist_fc")
    for name in LAYERS:
        model.get_layer(name).set_weights(list(weights[name]))
    return model


def train(exp: Experiment) -> Summary:
    """The demo with ``model.fit`` and ``LCACallback``."""
    model, data = mnist_fc(exp.weights), exp.data
    optimizer = (
        keras.optimizers.Adam(exp.lr, epsilon=1e-8)  # PyTorch's and optax's epsilon
        if exp.adam
        else keras.optimizers.SGD(exp.lr, momentum=0.9)
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = np.concatenate(list(exp.batches))
    callback = LCACallback(
        (data.x, data.y), exp.out, val_data=(data.xv, data.yv), optimizer=True, **exp.options
    )
    model.fit(
        data.x[order],
        data.y[order],
        batch_size=exp.args.batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    return callback.summary()
