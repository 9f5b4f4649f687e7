"""One adapter per installed framework for the reference problems of lca_core.tools.conformance.

A third-party backend adds its own function here (or in its own test suite) returning an
``Adapter`` for a problem, and runs ``test_conformance.py`` (see docs/backends.md). Each
framework's adapter is built on a ``device`` of its own where given (its accelerator, for
``test_accelerator.py``) and passes ``options`` to its backend.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lca_core import FunctionBackend
from lca_core.backend_kit.numpy_models import MLP
from lca_core.tools.conformance import Adapter, Problem, identity, transpose


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


def torch_adapter(problem: Problem, device: Any = None, **options: Any) -> Adapter:
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
    if device is not None:
        model.to(device)  # the backend evaluates on the model's device, the set held there
    x, y = torch.tensor(problem.x), torch.tensor(problem.y)
    return Adapter("torch", TorchBackend(model, nn.CrossEntropyLoss(), (x, y), **options), mapping)


def keras_adapter(problem: Problem, device: Any = None, **options: Any) -> Adapter:
    """Built and run inside ``tf.device(device)`` by the caller where a device is given
    (TensorFlow places variables and the evaluation set by scope)."""
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
    return Adapter("keras", TFBackend(model, loss, (problem.x, problem.y), **options), mapping)


def jax_adapter(problem: Problem, device: Any = None, **options: Any) -> Adapter:
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
    if device is not None:
        options["devices"] = [device]
    backend = JaxBackend(loss_fn, params, (problem.x, problem.y.astype(np.int32)), **options)
    return Adapter("jax", backend, mapping)


FRAMEWORK_ADAPTERS: dict[str, Callable[..., Adapter]] = {
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


# -- where a framework runs: the CPU, and its accelerator where it has one -------------------
#: with no accelerator visible, LCA_TEST_ACCELERATOR=cpu lets the CPU stand in for one, so
#: that the accelerator tests check themselves where no GPU is (tox env `all` sets it)
STAND_IN = os.environ.get("LCA_TEST_ACCELERATOR") == "cpu"


@dataclass(frozen=True)
class Placement:
    """One of a framework's devices: ``scope`` makes it the default while an adapter is
    built and run there, in full float32 precision (TF32, on by default for some GPU
    kernels, would be a difference of the GPU's arithmetic, not of lca's device path);
    ``held_on`` names the device kinds that hold a backend's evaluation set ("cpu",
    "cuda", "gpu")."""

    name: str
    framework: str
    device: Any
    kind: str
    scope: Callable[[], AbstractContextManager[Any]]
    held_on: Callable[[Any], set[str]]

    def adapter(self, problem: Problem, **options: Any) -> Adapter:
        return FRAMEWORK_ADAPTERS[self.framework](problem, self.device, **options)


@contextmanager
def _torch_float32() -> Iterator[None]:
    import torch

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _torch_placements() -> list[Placement]:
    import torch

    def held_on(backend: Any) -> set[str]:
        return {x.device.type for chunks in backend.sets.values() for x, _ in chunks}

    cuda = [torch.device("cuda")] if torch.cuda.is_available() else []
    return [
        Placement(str(d), "torch", d, d.type, _torch_float32, held_on)
        for d in [torch.device("cpu"), *cuda]
    ]


@contextmanager
def _jax_float32() -> Iterator[None]:
    """The device is the backend's ``devices=``, not the default one: that it is obeyed is
    part of the test."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield


def _jax_placements() -> list[Placement]:
    import jax

    def held_on(backend: Any) -> set[str]:
        return {d.platform for s in backend.sets for d in backend.chunks(s, False).xs.devices()}

    try:
        gpus = jax.devices("gpu")[:1]
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU
        gpus = []
    return [
        Placement(f"{d.platform}:{d.id}", "jax", d, d.platform, _jax_float32, held_on)
        for d in [jax.devices("cpu")[0], *gpus]
    ]


@contextmanager
def _tensorflow_on(name: str) -> Iterator[None]:
    import tensorflow as tf

    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        with tf.device(name):
            yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)


def _tensorflow_placements() -> list[Placement]:
    import tensorflow as tf

    def held_on(backend: Any) -> set[str]:
        return {
            tf.DeviceSpec.from_string(t.device).device_type.lower()
            for s in backend.sets
            for t in backend._chunked(s, False)[:4]  # the padded inputs, targets, weights, groups
        }

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")][:1]
    return [
        Placement(
            name,
            "tensorflow",
            name,
            tf.DeviceSpec.from_string(name).device_type.lower(),
            lambda n=name: _tensorflow_on(n),
            held_on,
        )
        for name in ["/device:CPU:0", *gpus]
    ]


PLACEMENTS: dict[str, Callable[[], list[Placement]]] = {
    "torch": _torch_placements,
    "tensorflow": _tensorflow_placements,
    "jax": _jax_placements,
}


def cpu_and_accelerator(framework: str) -> tuple[Placement, Placement | None]:
    """The framework's CPU and its first accelerator (None where it has none; the CPU again,
    as a stand-in, under ``LCA_TEST_ACCELERATOR=cpu``)."""
    cpu, *accelerators = PLACEMENTS[framework]()
    if accelerators:
        return cpu, accelerators[0]
    return cpu, cpu if STAND_IN else None
