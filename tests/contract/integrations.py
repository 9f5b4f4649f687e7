"""One small training session per integration, for the shared contract tests.

Each session holds a model and its optimizer state, makes trackers over it with the
contract's options, and trains it for a number of steps continuing where it left off, so
that resume and replay can be compared with uninterrupted runs. The same problem (a 16-12-4
tanh MLP on generated 4-class data, plain SGD on fixed batches) in every framework.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

N, D, C, HIDDEN, BATCH, LR = 120, 16, 4, 12, 30, 0.5


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, D)) * 1.5
    y = rng.integers(0, C, N)
    x = (centers[y] + rng.normal(size=(N, D))).astype(np.float32)
    return x, y.astype(np.int64)


def counter() -> Callable[[], np.float32]:
    """The noise of the sessions' stochastic losses: 1, 2, 3, … at successive calls, so
    that no two evaluations agree. Random noise can repeat within the determinism check's
    tolerance (1e-5 of the loss; ~3 % of the time for 1e-3 × uniform), and the check would
    then pass by luck."""
    calls = itertools.count(1)
    return lambda: np.float32(next(calls))


def jax_counter() -> Callable[[], Any]:
    """:func:`counter` inside traced JAX code: a host callback at every call."""
    import jax

    noise = counter()
    return lambda: jax.pure_callback(noise, jax.ShapeDtypeStruct((), np.float32))


def batch_indices(step: int) -> np.ndarray:
    start = (step * BATCH) % N
    return np.arange(start, start + BATCH)


def init_weights(seed: int = 1) -> list[np.ndarray]:
    """[kernel0 (D, H), bias0, kernel1 (H, C), bias1] as float32."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(D, HIDDEN)) / np.sqrt(D)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.normal(size=(HIDDEN, C)) / np.sqrt(HIDDEN)).astype(np.float32),
        np.zeros(C, np.float32),
    ]


class Session:
    """A model being trained; ``tracker(store, **options)`` tracks it from now on."""

    #: what the loss may return: "mean" and/or "per_example"
    conventions: tuple[str, ...] = ("mean", "per_example")
    #: the parameter dtypes a session can be built in (bfloat16: as GPUs train)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    steps_done = 0

    def flat_params(self) -> np.ndarray:
        """The model's parameters now, flattened in layout order as float32 by the
        framework's own means (independently of lca's snapshots)."""
        raise NotImplementedError

    def tracker(
        self,
        store: Any = None,
        *,
        convention: str = "mean",
        stochastic: bool = False,
        **options: Any,
    ) -> Any:
        raise NotImplementedError

    def train(self, tracker: Any, steps: int) -> None:
        raise NotImplementedError

    def use_momentum(self, momentum: float) -> Any:
        """Train on with SGD of this momentum from now on; returns what the framework's
        ``optimizer=`` takes for it."""
        raise NotImplementedError

    #: whether its backend streams a set larger than ``resident_bytes`` (the function
    #: backend hands the whole set to the user's function at once)
    streams = True
    #: whether its backend keeps lca's arithmetic in the framework's arrays (torch, JAX,
    #: Keras on JAX); the others compute on the host and refuse ``arithmetic="device"``
    device_arithmetic = True

    def streamed_tracker(self, store: Any = None, **options: Any) -> Any:
        """A tracker whose evaluation set is larger than its ``resident_bytes``."""
        return self.tracker(store, resident_bytes=1, **options)

    def backend(self) -> Any:
        """A backend over this session's model and data (for replay)."""
        return self.tracker().backend

    @property
    def reference_loss(self) -> float:
        """L(θ_0) computed independently in float64 numpy from the initial weights."""
        x, y = problem()
        k0, b0, k1, b1 = (w.astype(np.float64) for w in init_weights())
        logits = np.tanh(x @ k0 + b0) @ k1 + b1
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y)), y].mean())


# -- function (numpy, no framework) -------------------------------------------------------
class FunctionSession(Session):
    conventions = ("mean",)  # loss_and_grad returns the mean loss and its gradient
    dtypes = ("float32",)  # numpy has no bfloat16
    streams = False
    device_arithmetic = False

    def __init__(self, dtype: str = "float32") -> None:
        from lca_core.backend_kit.numpy_models import MLP

        self.x, self.y = problem()
        self.mlp = MLP((D, HIDDEN, C), activation="tanh")
        self.theta = self.mlp.init(1)
        self.theta0 = self.theta

    @property
    def reference_loss(self) -> float:
        return float(self.mlp.loss_and_grad(self.theta0, self.x, self.y)[0])

    def tracker(self, store=None, *, convention="mean", stochastic=False, data=None, **options):
        from lca_core import FunctionBackend, Tracker

        fn = self.mlp.loss_and_grad
        if stochastic:
            noise = counter()

            def fn(theta, x, y, _f=self.mlp.loss_and_grad):
                loss, grad = _f(theta, x, y)
                return loss + 1e-3 * noise(), grad

        val = options.pop("val_data", None)
        options.pop("batch_size", None)  # the numpy loss takes the whole set at once
        backend = FunctionBackend(
            fn,
            self.theta,
            data=data or (self.x, self.y),
            val_data=val,
            layout=self.mlp.layout,
            arithmetic=options.pop("arithmetic", None),
        )
        return Tracker(backend, store, **options)

    opt: Any = None

    def use_momentum(self, momentum):
        from tests.core.models import HeavyBall

        self.opt, self.buffer = HeavyBall(LR, momentum), np.zeros_like(self.theta)
        return self.opt

    def train(self, tracker, steps):
        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            _, grad = self.mlp.loss_and_grad(self.theta, self.x[idx], self.y[idx])
            if self.opt is None:
                new = self.theta - LR * grad
                tracker.update(self.theta, new)
            else:
                new, buffer = self.opt.step(self.theta, grad, self.buffer)
                tracker.update(self.theta, new, opt_state=(self.buffer, buffer))
                self.buffer = buffer
            self.theta = new
            self.steps_done += 1


# -- torch ----------------------------------------------------------------------------------
class TorchSession(Session):
    def __init__(self, dtype: str = "float32") -> None:
        import torch
        from torch import nn

        x, y = problem()
        self.x, self.y = torch.from_numpy(x).to(getattr(torch, dtype)), torch.from_numpy(y)
        self.model = nn.Sequential(nn.Linear(D, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, C))
        k0, b0, k1, b1 = init_weights()
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), [k0.T, b0, k1.T, b1], strict=True):
                p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        self.model.to(getattr(torch, dtype))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)

    def flat_params(self) -> np.ndarray:
        import torch

        return torch.cat([p.detach().float().reshape(-1) for p in self.model.parameters()]).numpy()

    def tracker(self, store=None, *, convention="mean", stochastic=False, data=None, **options):
        import torch
        from lca_torch import Tracker
        from torch import nn

        ce = nn.CrossEntropyLoss(reduction="mean" if convention == "mean" else "none")
        noise = counter()
        loss_fn = (lambda out, y: ce(out, y) + 1e-3 * float(noise())) if stochastic else ce
        if "val_data" in options:
            options["val_data"] = tuple(torch.from_numpy(a) for a in options["val_data"])
        data = tuple(torch.from_numpy(a) for a in data) if data else (self.x, self.y)
        return Tracker(self.model, loss_fn, data, store, **options)

    def streamed_tracker(self, store=None, **options):
        """Tensors already on the device are held as views whatever their size: a loader's
        batches are what a torch backend streams."""
        import torch
        from lca_torch import Tracker
        from torch import nn

        chunks = options.get("batch_size") or 4096
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(self.x, self.y), batch_size=chunks
        )
        return Tracker(
            self.model, nn.CrossEntropyLoss(), loader, store, resident_bytes=1, **options
        )

    def use_momentum(self, momentum):
        import torch

        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=momentum)
        return self.opt

    def train(self, tracker, steps):
        from torch import nn

        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            with tracker.step():
                self.opt.step()
            self.steps_done += 1


# -- Keras 3 (TensorFlow or JAX underneath) ----------------------------------------------
class KerasSession(Session):
    def __init__(self, dtype: str = "float32") -> None:
        import keras

        self.x, self.y = problem()
        self.model = keras.Sequential(
            [
                keras.Input((D,)),
                keras.layers.Dense(HIDDEN, "tanh", name="fc0", dtype=dtype),
                keras.layers.Dense(C, name="fc1", dtype=dtype),
            ],
            name="mlp",
        )
        self.model.set_weights(init_weights())
        self.opt = keras.optimizers.SGD(LR)
        self.opt.build(self.model.trainable_variables)

    def flat_params(self) -> np.ndarray:
        import keras

        values = (keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables)
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in values])

    def loss(self, convention: str, stochastic: bool) -> Any:
        import keras

        reduction = "sum_over_batch_size" if convention == "mean" else None
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
        if not stochastic:
            return ce
        noise = self.noise()
        return lambda y, out: ce(y, out) + 1e-3 * noise()

    def use_momentum(self, momentum):
        import keras

        self.opt = keras.optimizers.SGD(LR, momentum=momentum)
        self.opt.build(self.model.trainable_variables)
        return self.opt

    def tracker(self, store=None, *, convention="mean", stochastic=False, data=None, **options):
        from lca_tensorflow import Tracker

        loss = self.loss(convention, stochastic)
        return Tracker(self.model, loss, data or (self.x, self.y), store, **options)


class KerasTFSession(KerasSession):
    device_arithmetic = False  # TensorFlow's tensors are not array-API arrays
    """A TensorFlow GradientTape loop: variables change in place (begin / end)."""

    def noise(self) -> Callable[[], Any]:
        """Random, not :func:`counter`: the backend maps the loss over examples
        (``tf.vectorized_map``), where no variable can be added to. Uniform on [0, 1000)
        per example (× 1e-3 in the loss), so that two evaluations' mean losses differ by
        ~0.04, over a thousand times the check's tolerance."""
        import tensorflow as tf

        return lambda: tf.random.uniform([], maxval=1000.0)

    def train(self, tracker, steps):
        import keras
        import tensorflow as tf

        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            with tf.GradientTape() as tape:
                loss = ce(self.y[idx], self.model(self.x[idx], training=True))
            grads = tape.gradient(loss, self.model.trainable_variables)
            with tracker.step():
                self.opt.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
            self.steps_done += 1


class KerasJaxSession(KerasSession):
    """Keras' stateless loop on JAX: new values each step (update)."""

    def noise(self) -> Callable[[], Any]:
        return jax_counter()

    def train(self, tracker, steps):
        import jax
        import keras

        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model = self.model

        def loss_of(values, x, y):
            out, _ = model.stateless_call(values, [], x, training=True)
            return ce(y, out)

        opt_vars = [v.value for v in self.opt.variables]
        values = [v.value for v in model.trainable_variables]
        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            grads = jax.grad(loss_of)(values, self.x[idx], self.y[idx])
            new, new_opt_vars = self.opt.stateless_apply(opt_vars, grads, values)
            split = tracker.splitter is not None
            tracker.update(values, new, opt_state=(opt_vars, new_opt_vars) if split else None)
            values, opt_vars = new, new_opt_vars
            self.steps_done += 1
        for v, value in zip(model.trainable_variables, values, strict=True):
            v.assign(value)
        for v, value in zip(self.opt.variables, opt_vars, strict=True):
            v.assign(value)


# -- JAX ----------------------------------------------------------------------------------
class JaxSession(Session):
    def __init__(self, dtype: str = "float32") -> None:
        import jax.numpy as jnp

        self.x, y = problem()
        self.y = y.astype(np.int32)
        k0, b0, k1, b1 = (jnp.asarray(w, dtype=dtype) for w in init_weights())
        self.params = {"fc0": {"kernel": k0, "bias": b0}, "fc1": {"kernel": k1, "bias": b1}}

    def flat_params(self) -> np.ndarray:
        import jax

        leaves = jax.tree_util.tree_leaves(self.params)
        return np.concatenate([np.asarray(leaf, dtype=np.float32).ravel() for leaf in leaves])

    @staticmethod
    def per_example(params, x, y):
        import jax.numpy as jnp
        import optax

        h = jnp.tanh(x @ params["fc0"]["kernel"] + params["fc0"]["bias"])
        out = h @ params["fc1"]["kernel"] + params["fc1"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(out, y)

    def tracker(self, store=None, *, convention="mean", stochastic=False, data=None, **options):
        from lca_jax import Tracker

        f = self.per_example
        loss = (lambda p, x, y: f(p, x, y).mean()) if convention == "mean" else f
        if stochastic:
            noise = jax_counter()

            def loss(p, x, y, _f=loss):
                return _f(p, x, y) + 1e-3 * noise()

        if "val_data" in options:
            xv, yv = options["val_data"]
            options["val_data"] = (xv, yv.astype(np.int32))
        data = (data[0], data[1].astype(np.int32)) if data else (self.x, self.y)
        return Tracker(loss, self.tracked(), data, store, **options)

    def tracked(self) -> Any:
        """What the tracker is given: the parameters (a model, for nnx)."""
        return self.params

    tx: Any = None

    def use_momentum(self, momentum):
        from lca_jax import optimizers

        self.tx = optimizers.sgd(LR, momentum)
        self.opt_state = self.tx.init(self.params)
        return self.tx

    def train(self, tracker, steps):
        import jax
        import optax

        grad = jax.jit(jax.grad(lambda p, x, y: self.per_example(p, x, y).mean()))
        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            g = grad(self.params, self.x[idx], self.y[idx])
            if self.tx is None:
                new = jax.tree_util.tree_map(lambda p, d: p - LR * d, self.params, g)
                tracker.update(self.params, new)
            else:
                updates, state = self.tx.update(g, self.opt_state, self.params)
                new = optax.apply_updates(self.params, updates)
                tracker.update(self.params, new, opt_state=(self.opt_state, state))
                self.opt_state = state
            self.params = new
            self.steps_done += 1


class NnxSession(JaxSession):
    """The same MLP as a flax nnx model, its optimizer updating it in place (the API flax
    recommends): ``Tracker(loss_fn, model, data)`` and ``with tracker.step()``."""

    dtypes = ("float32",)

    def __init__(self, dtype: str = "float32") -> None:
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.x, y = problem()
        self.y = y.astype(np.int32)

        class MLP(nnx.Module):
            def __init__(self, rngs: nnx.Rngs) -> None:
                self.fc0 = nnx.Linear(D, HIDDEN, rngs=rngs)
                self.fc1 = nnx.Linear(HIDDEN, C, rngs=rngs)

            def __call__(self, x: Any) -> Any:
                return self.fc1(jnp.tanh(self.fc0(x)))

        self.model = MLP(nnx.Rngs(0))
        k0, b0, k1, b1 = (jnp.asarray(w) for w in init_weights())
        for variable, value in (
            (self.model.fc0.kernel, k0),
            (self.model.fc0.bias, b0),
            (self.model.fc1.kernel, k1),
            (self.model.fc1.bias, b1),
        ):
            variable[...] = value
        self.optimizer = nnx.Optimizer(self.model, optax.sgd(LR), wrt=nnx.Param)

    def flat_params(self) -> np.ndarray:
        import jax
        from flax import nnx

        leaves = jax.tree_util.tree_leaves(nnx.state(self.model, nnx.Param))
        return np.concatenate([np.asarray(leaf, dtype=np.float32).ravel() for leaf in leaves])

    @staticmethod
    def per_example(model, x, y):
        import optax

        return optax.softmax_cross_entropy_with_integer_labels(model(x), y)

    def tracked(self) -> Any:
        return self.model

    def use_momentum(self, momentum):
        from flax import nnx
        from lca_jax import optimizers

        self.optimizer = nnx.Optimizer(self.model, optimizers.sgd(LR, momentum), wrt=nnx.Param)
        return self.optimizer

    def train(self, tracker, steps):
        from flax import nnx

        for _ in range(steps):
            idx = batch_indices(self.steps_done)
            x, y = self.x[idx], self.y[idx]
            grads = nnx.grad(lambda m, x=x, y=y: self.per_example(m, x, y).mean())(self.model)
            with tracker.step():
                self.optimizer.update(self.model, grads)
            self.steps_done += 1


@dataclass(frozen=True)
class Integration:
    name: str
    session: Callable[[], Session]
    #: the integration's public classes that implement the contract
    classes: Callable[[], list[type]]


def _torch_classes() -> list[type]:
    import lca_torch

    found = [lca_torch.Tracker]
    if importlib.util.find_spec("lightning"):
        from lca_torch.lightning import LCACallback

        found.append(LCACallback)
    if importlib.util.find_spec("transformers"):
        from lca_torch.hf import LCACallback as HFCallback

        found.append(HFCallback)
    return found


def _keras_classes() -> list[type]:
    import lca_tensorflow

    return [lca_tensorflow.Tracker, lca_tensorflow.LCACallback]


def _core_classes() -> list[type]:
    import lca_core

    return [lca_core.Tracker]


def _jax_classes() -> list[type]:
    import lca_jax

    return [lca_jax.Tracker]


def installed() -> list[Integration]:
    """Every integration whose framework is installed here (the tox env decides)."""
    found = [Integration("function", FunctionSession, _core_classes)]
    if importlib.util.find_spec("torch"):
        found.append(Integration("torch", TorchSession, _torch_classes))
    keras_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if importlib.util.find_spec("keras"):
        if keras_backend == "tensorflow" and importlib.util.find_spec("tensorflow"):
            found.append(Integration("keras-tf", KerasTFSession, _keras_classes))
        if keras_backend == "jax" and importlib.util.find_spec("jax"):
            found.append(Integration("keras-jax", KerasJaxSession, _keras_classes))
    if importlib.util.find_spec("jax") and importlib.util.find_spec("optax"):
        found.append(Integration("jax", JaxSession, _jax_classes))
        if importlib.util.find_spec("flax") and os.environ.get("KERAS_BACKEND") != "jax":
            found.append(Integration("jax-nnx", NnxSession, _jax_classes))
    return found
