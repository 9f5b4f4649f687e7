"""One adapter per installed framework for the reference problems of lca_core.conformance.

A third-party backend adds its own function here (or in its own test suite) returning an
``Adapter`` for a problem, and runs ``test_conformance.py`` (see docs/backends.md).
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from lca_core import FunctionBackend
from lca_core.conformance import Adapter, Problem, identity, transpose
from lca_core.numpy_models import MLP


def function_adapter(problem: Problem) -> Adapter | None:
    """The fourth witness: the numpy MLP with analytic gradients (MLP problem only)."""
    if problem.kind != "mlp":
        return None
    mlp = MLP((16, 12, 4), activation="tanh")
    backend = FunctionBackend(
        mlp.loss_and_grad, mlp.init(), data=(problem.x, problem.y), layout=mlp.layout
    )
    return Adapter(
        "function",
        backend,
        {
            "fc0.kernel": ("fc0.weight", transpose, transpose),
            "fc0.bias": ("fc0.bias", identity, identity),
            "fc1.kernel": ("fc1.weight", transpose, transpose),
            "fc1.bias": ("fc1.bias", identity, identity),
        },
    )


def torch_adapter(problem: Problem) -> Adapter:
    import torch
    from lca_torch import TorchBackend
    from torch import nn

    class Permute(nn.Module):
        def __init__(self, *dims: int) -> None:
            super().__init__()
            self.dims = dims

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(*self.dims)

    if problem.kind == "mlp":
        model = nn.Sequential(
            OrderedDict(fc0=nn.Linear(16, 12), act=nn.Tanh(), fc1=nn.Linear(12, 4))
        )
        dense = {"fc0": "fc0", "fc1": "fc1"}
        mapping = {}
    else:
        model = nn.Sequential(
            OrderedDict(
                nchw=Permute(0, 3, 1, 2),
                conv=nn.Conv2d(1, 4, 3, padding=1),
                act=nn.Tanh(),
                nhwc=Permute(0, 2, 3, 1),
                flat=nn.Flatten(),
                fc=nn.Linear(256, 4),
            )
        )
        dense = {"fc": "fc"}
        mapping = {
            "conv.kernel": (
                "conv.weight",
                lambda a: a.transpose(3, 2, 0, 1),
                lambda a: a.transpose(2, 3, 1, 0),
            ),
            "conv.bias": ("conv.bias", identity, identity),
        }
    for canonical, module in dense.items():
        mapping[f"{canonical}.kernel"] = (f"{module}.weight", transpose, transpose)
        mapping[f"{canonical}.bias"] = (f"{module}.bias", identity, identity)
    x, y = torch.tensor(problem.x), torch.tensor(problem.y)
    return Adapter("torch", TorchBackend(model, nn.CrossEntropyLoss(), (x, y)), mapping)


def keras_adapter(problem: Problem) -> Adapter:
    import keras
    from lca_tensorflow import TFBackend

    if problem.kind == "mlp":
        model = keras.Sequential(
            [
                keras.Input((16,)),
                keras.layers.Dense(12, "tanh", name="fc0"),
                keras.layers.Dense(4, name="fc1"),
            ],
            name="mlp",
        )
    else:
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv"),
                keras.layers.Flatten(),
                keras.layers.Dense(4, name="fc"),
            ],
            name="cnn",
        )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mapping = {c: (c.replace(".", "/"), identity, identity) for c in problem.shapes}
    return Adapter("keras", TFBackend(model, loss, (problem.x, problem.y)), mapping)


def jax_adapter(problem: Problem) -> Adapter:
    import jax
    import jax.numpy as jnp
    import optax
    from lca_jax import JaxBackend

    def forward(params: dict, x: jax.Array) -> jax.Array:
        if problem.kind == "mlp":
            h = jnp.tanh(x @ params["fc0"]["kernel"] + params["fc0"]["bias"])
            return h @ params["fc1"]["kernel"] + params["fc1"]["bias"]
        h = jax.lax.conv_general_dilated(
            x, params["conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jnp.tanh(h + params["conv"]["bias"]).reshape(len(x), -1)
        return h @ params["fc"]["kernel"] + params["fc"]["bias"]

    def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y)

    params: dict = {}
    for c, shape in problem.shapes.items():
        layer, leaf = c.split(".")
        params.setdefault(layer, {})[leaf] = jnp.zeros(shape, jnp.float32)
    mapping = {c: (c.replace(".", "/"), identity, identity) for c in problem.shapes}
    backend = JaxBackend(loss_fn, params, (problem.x, problem.y.astype(np.int32)))
    return Adapter("jax", backend, mapping)


FRAMEWORK_ADAPTERS: dict[str, Callable[[Problem], Adapter]] = {
    "torch": torch_adapter,
    "tensorflow": keras_adapter,
    "jax": jax_adapter,
}


def installed_adapters(problem: Problem) -> list[Adapter]:
    """The function witness plus one adapter per framework installed here."""
    found = [a for a in [function_adapter(problem)] if a is not None]
    for module, make in FRAMEWORK_ADAPTERS.items():
        if importlib.util.find_spec(module) is not None:
            found.append(make(problem))
    return found
