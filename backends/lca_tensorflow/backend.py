"""The TensorFlow / Keras 3 backend.

One ``tf.function`` per backend evaluates a whole pass: it assigns θ to the model's
trainable variables, scans the evaluation set (resident as padded chunks with per-example
weights, so the shapes never change and it never retraces) and accumulates loss and
gradient per class group in float64. The model's variables — trainable and not — are
restored bit-exactly afterwards; its optimizer and metrics are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lca_core import Evaluation, Snapshot
from lca_core.backend_kit import DEFAULT_EVAL_BATCH, BackendBase, check_bn_policy
from lca_core.errors import LossShapeError
from lca_core.evaluation_data import array_sets
from lca_core.layout import flat_vector

from .keras_common import layout_of, per_example_loss, trial

_BATCHNORM = (keras.layers.BatchNormalization,)


class TFBackend(BackendBase):
    """LCA backend for a Keras 3 model on the TensorFlow backend.

    ``loss_fn`` defaults to the model's compiled loss. ``bn_policy="batch"`` (default)
    normalises with each fixed chunk's statistics; ``"running"`` uses the moving statistics
    and reports their drift. Dropout and other training-only layers are off.
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
    ) -> None:
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
        # saving and restoring every variable as one graph each: one dispatch, not one per op
        everything = self._vars + self._state_vars
        self._save = tf.function(lambda: [tf.identity(v) for v in everything])
        self._restore = tf.function(
            lambda values: [v.assign(x) for v, x in zip(everything, values, strict=True)]
        )

    def _chunked(self, split: str, per_class: bool) -> tuple[tf.Tensor, ...]:
        key = (split, per_class)
        if key not in self._chunks:
            padded = self.padded(split, per_class, self.batch_size)
            self._chunks[key] = (*(tf.constant(a) for a in padded[:4]), tf.constant(padded.groups))
        return self._chunks[key]

    # -- the compiled pass -----------------------------------------------------------------
    def _pass_fn(
        self,
        theta: tf.Tensor,
        xs: tf.Tensor,
        ys: tf.Tensor,
        ws: tf.Tensor,
        group: tf.Tensor,
        groups: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        self.traces += 1
        offset = 0
        for v in self._vars:
            size = int(np.prod(v.shape, dtype=np.int64))
            v.assign(tf.cast(tf.reshape(theta[offset : offset + size], v.shape), v.dtype))
            offset += size
        k = offset
        loss_acc = tf.zeros([groups], tf.float64)
        grad_acc = tf.zeros([groups, k], tf.float64)
        for i in tf.range(tf.shape(xs)[0]):
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
    def _evaluation(self, state: Any) -> Iterator[None]:
        """Variables saved and restored bit-exactly; BatchNorm on batch statistics for the
        "batch" policy (the rest of the model in inference mode)."""
        saved = self._save()
        if state is not None:
            for v, value in zip(self._state_vars, state, strict=True):
                v.assign(value)
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
            self._restore(saved)

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
        }

    def snapshot(self) -> Snapshot:
        theta = flat_vector(v.numpy() for v in self._vars)
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
        key = (split, per_class)
        out = []
        with self._evaluation(state):  # traced inside: BatchNorm's policy is in the graph
            if key not in self._concrete:  # looked up once: calling a tf.function re-hashes
                self._concrete[key] = self._pass.get_concrete_function(
                    tf.TensorSpec([self.layout.size], tf.float64), *args
                )
            run_pass = self._concrete[key]
            for theta in thetas:
                loss, grad = run_pass(tf.constant(theta, tf.float64), *args)
                out.append(Evaluation.from_groups(loss.numpy(), grad.numpy(), per_class))
        return out

    def _evaluate_blocks(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        """A set larger than ``resident_bytes``: each pass sums over blocks of chunks, each
        block on the device only while it is evaluated (the last block's shorter shape is
        traced once more)."""
        sums = [[0.0, 0.0] for _ in thetas]
        with self._evaluation(state):
            for block in self.blocks(split, per_class, self.batch_size):
                args = (*(tf.constant(a) for a in block[:4]), tf.constant(block.groups))
                for i, theta in enumerate(thetas):
                    loss, grad = self._pass(tf.constant(theta, tf.float64), *args)
                    sums[i][0] += loss.numpy()
                    sums[i][1] += grad.numpy()
        return [Evaluation.from_groups(loss, grad, per_class) for loss, grad in sums]
