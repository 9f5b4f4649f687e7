"""The TensorFlow / Keras 3 backend.

One ``tf.function`` per backend evaluates every point of a request in one call (each call
has a fixed cost, a noticeable part of a small model's pass: benchmarks/README.md): it
copies the model's variables aside (one copy kept on the device for this), assigns each θ
to the trainable ones, scans the evaluation set (resident as padded chunks with per-example
weights, so the shapes never change and it never retraces), accumulates loss and gradient
per class group in float64, and puts the variables back. They are the model's own again
bit-exactly afterwards, also when the call fails midway; its optimizer and metrics are
never touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lca_core import Evaluation, Snapshot
from lca_core.arrays import check_arithmetic
from lca_core.backend_kit.base import DEFAULT_EVAL_BATCH, BackendBase, check_bn_policy
from lca_core.backend_kit.evaluation_data import array_sets
from lca_core.errors import LossShapeError
from lca_core.layout import common_dtype

from .keras_common import layout_of, per_example_loss, trial

_BATCHNORM = (keras.layers.BatchNormalization,)


class TFBackend(BackendBase):
    """LCA backend for a Keras 3 model on the TensorFlow backend.

    ``loss_fn`` defaults to the model's compiled loss. ``bn_policy="batch"`` (default)
    normalises with each fixed chunk's statistics; ``"running"`` uses the moving statistics
    and reports their drift. Dropout and other training-only layers are off.

    Args:
        model: a built Keras model; never changed by an evaluation.
        loss_fn: the loss (per example or mean); default the model's compiled loss.
        data: the evaluation set (inputs, targets), arrays or tensors.
        val_data: a validation set (inputs, targets): also allocate its loss change.
        batch_size: examples per evaluation chunk (the set is reduced in float64 over them).
        num_classes: the classes for per-class LCA (default: inferred from integer labels).
        bn_policy: BatchNorm during evaluation: "batch" or "running".
        resident_bytes: most bytes of the set kept on the device; a larger one is streamed.
        arithmetic: "host" (and "auto"): lca's K-long arithmetic runs in numpy float64,
            the gradients copied once per point — TensorFlow's tensors are not array-API
            arrays (docs/concepts.md, "Where the arithmetic runs"). "device" is refused.

    Raises:
        RuntimeError: Keras does not run on TensorFlow (``KERAS_BACKEND``).
        EmptyEvaluationSetError, EvaluationDataError: unusable evaluation data.
    """

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        return isinstance(model, keras.Model) and keras.backend.backend() == "tensorflow"

    def __init__(
        self,
        model: keras.Model,
        loss_fn: Any = None,
        data: tuple[Any, Any] | None = None,
        *,
        val_data: tuple[Any, Any] | None = None,
        batch_size: int = DEFAULT_EVAL_BATCH,
        bn_policy: str = "batch",
        num_classes: int | None = None,
        resident_bytes: int | None = None,
        arithmetic: str | None = None,
    ) -> None:
        self.arithmetic = check_arithmetic(arithmetic or "auto", device=False, backend="TFBackend")
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                f"lca_tensorflow needs KERAS_BACKEND=tensorflow (it is "
                f"{keras.backend.backend()!r}); use lca_tensorflow.LCACallback, which picks "
                "the matching backend, or that framework's own lca backend"
            )
        if data is None:
            raise ValueError("give the evaluation data: (inputs, targets)")
        if loss_fn is None:
            loss_fn = getattr(model, "loss", None)
        self.model, self.batch_size = model, int(batch_size)
        self.bn_policy = check_bn_policy(bn_policy)
        self.loss = per_example_loss(loss_fn)
        self.layout = layout_of(model)
        self._vars = list(model.trainable_variables)
        self._state_vars = list(model.non_trainable_variables)
        self._bn_layers = [
            layer for layer in model._flatten_layers() if isinstance(layer, _BATCHNORM)
        ]
        sets = array_sets(data, val_data)
        self.hold_sets(sets, sets["train"][1], num_classes)
        self.resident_bytes = (
            resident_bytes  # None: resident_budget() (TF reports no free GPU memory)
        )
        self.check_trial(*trial(model, self.loss, sets))
        self._chunks: dict[tuple[str, bool], tuple[tf.Tensor, ...]] = {}
        self._concrete: dict[tuple[str, bool], Any] = {}
        self.traces = 0  # how often the pass was traced (tests check it stays at 1 per shape)
        self._pass = tf.function(self._pass_fn, reduce_retracing=True)
        self._everything = self._vars + self._state_vars
        # the model's variables are copied here inside the pass before θ is assigned, and
        # back at its end: one graph call per evaluation
        self._shadow: list[tf.Variable] = []
        self._armed: tf.Variable | None = None  # True while the model holds θ, not its own
        self._flat: Any = None

    def _keep_shadow(self) -> None:
        if self._armed is None:
            self._shadow = [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self._everything
            ]
            self._armed = tf.Variable(False, trainable=False)
            self._recover = tf.function(self._recover_fn).get_concrete_function()

    def _recover_fn(self) -> None:
        restored = [v.assign(copy) for v, copy in zip(self._everything, self._shadow, strict=True)]
        with tf.control_dependencies(restored):
            self._armed.assign(False)

    def _chunked(self, split: str, per_class: bool) -> tuple[tf.Tensor, ...]:
        key = (split, per_class)
        if key not in self._chunks:
            padded = self.padded(split, per_class, self.batch_size)
            self._chunks[key] = (*(tf.constant(a) for a in padded[:4]), tf.constant(padded.groups))
        return self._chunks[key]

    # -- the compiled pass -----------------------------------------------------------------
    def subset_changed(self) -> None:
        """A new subset (``resample``): its chunks are made anew, in the same shapes, so
        the traced pass is reused."""
        self._chunks = {k: c for k, c in self._chunks.items() if k[0] != "train"}

    def _pass_fn(
        self, thetas: tf.Tensor, state: tuple[tf.Tensor, ...], *chunks: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Loss and gradient per group at each row of ``thetas``. The model's own variables
        are copied aside first and put back last; ``_armed`` is set only once the copy is
        complete and before any variable changes (explicit dependencies: the graph orders
        stateful operations only per variable), so after a failure it says whether the
        copy must be put back."""
        self.traces += 1
        saved = [copy.assign(v) for copy, v in zip(self._shadow, self._everything, strict=True)]
        with tf.control_dependencies(saved):
            armed = self._armed.assign(True)
        with tf.control_dependencies([armed]):
            for v, value in zip(self._state_vars if state else [], state, strict=True):
                v.assign(value)
            n = tf.shape(thetas)[0]
            losses = tf.TensorArray(tf.float64, size=n)
            grads = tf.TensorArray(tf.float64, size=n)
            for j in tf.range(n):
                loss, grad = self._sums(thetas[j], chunks)
                losses = losses.write(j, loss)
                grads = grads.write(j, grad)
            losses, grads = losses.stack(), grads.stack()
        with tf.control_dependencies([losses, grads]):
            self._recover_fn()
        return tf.identity(losses), tf.identity(grads)

    def _sums(self, theta: tf.Tensor, chunks: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, tf.Tensor]:
        """Loss and gradient per group at one θ over the chunks (xs, ys, ws, group, groups),
        accumulated in float64."""
        xs, ys, ws, group, groups = chunks
        offset = 0
        for v in self._vars:
            size = int(np.prod(v.shape, dtype=np.int64))
            v.assign(tf.cast(tf.reshape(theta[offset : offset + size], v.shape), v.dtype))
            offset += size
        loss_acc = tf.zeros([groups], tf.float64)
        grad_acc = tf.zeros([groups, offset], tf.float64)
        # one chunk (a set of at most batch_size examples): no graph loop to run
        chunks = range(1) if xs.shape[0] == 1 else tf.range(tf.shape(xs)[0])
        for i in chunks:
            with tf.GradientTape() as tape:
                out = self.model(xs[i], training=False)
                losses = tf.cast(self._example_losses(ys[i], out), tf.float32)
                loss = tf.reduce_sum(losses * ws[i])
            grads = tape.gradient(
                loss, self._vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            flat = tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads], 0)
            index = tf.reshape(group[i], [1, 1])
            loss_acc = tf.tensor_scatter_nd_add(
                loss_acc, index, tf.reshape(tf.cast(loss, tf.float64), [1])
            )
            grad_acc = tf.tensor_scatter_nd_add(grad_acc, index, flat[None])
        return loss_acc, grad_acc

    def _example_losses(self, y: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
        """Each example's loss, whether the loss returns them or their mean (then it is
        applied to one example at a time, so padding never enters a mean)."""
        losses = self.loss(y, out)
        if losses.shape.rank == 0:
            return tf.vectorized_map(lambda e: self.loss(e[0][None], e[1][None]), (y, out))
        if losses.shape.rank != 1:
            raise LossShapeError(
                f"the loss returned shape {losses.shape} for a batch; return one loss per "
                "example (shape (batch,)) or the batch mean (a scalar)"
            )
        return losses

    @contextmanager
    def _batch_statistics(self) -> Iterator[None]:
        """BatchNorm on batch statistics for the "batch" policy (the rest of the model in
        inference mode) while the pass is traced."""
        patched = []
        if self.bn_policy == "batch":
            for layer in self._bn_layers:
                original = layer.call

                def forced(
                    inputs: Any, training: Any = None, mask: Any = None, _call: Any = original
                ) -> Any:
                    return _call(inputs, training=True, mask=mask)

                layer.call = forced
                patched.append(layer)
        try:
            yield
        finally:
            for layer in patched:
                del layer.call

    def _run(self, run_pass: Any, thetas: list[np.ndarray], state: Any, args: tuple) -> tuple:
        """One pass over ``args`` at every θ; the model's variables are its own again
        afterwards, also when the pass fails midway."""
        self._keep_shadow()
        values = tuple(tf.constant(v) for v in state) if state is not None else ()
        try:
            losses, grads = run_pass(tf.constant(np.stack(thetas), tf.float64), values, *args)
        except BaseException:
            if self._armed is not None and bool(self._armed.numpy()):
                self._recover()
            raise
        return losses.numpy(), grads.numpy()

    # -- protocol -------------------------------------------------------------------------
    def policy(self) -> dict[str, Any]:
        return {
            "framework": "tensorflow",
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "batchnorm": self.bn_policy if self._bn_layers else None,
            "eval_batch_size": self.batch_size,
            "eval_samples": len(self.sets["train"][0]),
            "streamed": self.streamed("train"),
            "dropout": "off",
            "arithmetic": self.arithmetic,
        }

    def snapshot(self) -> Snapshot:
        if self._flat is None:  # θ in one graph call: reading each variable costs a call
            dtype = tf.as_dtype(common_dtype(v.dtype for v in self._vars))
            self._flat = tf.function(
                lambda: tf.concat([tf.reshape(tf.cast(v, dtype), [-1]) for v in self._vars], 0)
            ).get_concrete_function()
        theta = self._flat().numpy()
        state = None
        if self.bn_policy == "running" and self._bn_layers:
            state = [v.numpy() for v in self._state_vars]
        return Snapshot(theta, state)

    def evaluate_split(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        if self.streamed(split):
            return self._evaluate_blocks(thetas, state, split, per_class)
        args = self._chunked(split, per_class)
        key = (split, per_class, state is not None)
        with self._batch_statistics():  # traced inside: BatchNorm's policy is in the graph
            if key not in self._concrete:  # looked up once: calling a tf.function re-hashes
                self._keep_shadow()
                self._concrete[key] = self._pass.get_concrete_function(
                    tf.TensorSpec([None, self.layout.size], tf.float64),
                    tuple(tf.TensorSpec(v.shape, v.dtype) for v in state or ()),
                    *args,
                )
            losses, grads = self._run(self._concrete[key], thetas, state, args)
        return [
            Evaluation.from_groups(loss, grad, per_class)
            for loss, grad in zip(losses, grads, strict=True)
        ]

    def _evaluate_blocks(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        """A set larger than ``resident_bytes``: each pass sums over blocks of chunks, each
        block on the device only while it is evaluated (the last block's shorter shape is
        traced once more)."""
        losses, grads = 0.0, 0.0
        with self._batch_statistics():
            for block in self.blocks(split, per_class, self.batch_size):
                args = (*(tf.constant(a) for a in block[:4]), tf.constant(block.groups))
                block_losses, block_grads = self._run(self._pass, thetas, state, args)
                losses, grads = losses + block_losses, grads + block_grads
        return [
            Evaluation.from_groups(loss, grad, per_class)
            for loss, grad in zip(losses, grads, strict=True)
        ]
