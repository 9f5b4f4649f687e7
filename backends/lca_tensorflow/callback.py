"""``LCACallback``: LCA for an unmodified ``model.fit``.

    model.fit(x, y, epochs=3, callbacks=[LCACallback(eval_data=(x, y), store="run")])

Each executed train step (a block of ``steps_per_execution`` batches) is one LCA step.
Per-step figures go into the batch logs (progress bar); epoch means (``lca_residual``,
``lca_pct_helped``, ``lca_sum``) into the epoch logs, so ``History`` and Keras' own
``TensorBoard`` callback record them — list this callback before those.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from lca_core import Allocator, NotARunError, StepResult, open_run

SUPPORTED_KERAS_BACKENDS = ("tensorflow", "jax")


def _has_run(path: str | os.PathLike[str] | None) -> bool:
    if path is None or not os.path.isdir(path):
        return False
    try:
        open_run(path)
    except NotARunError:
        return False
    return True


class LCACallback(keras.callbacks.Callback):
    """Allocates every train step's loss change on ``eval_data``.

    ``loss_fn`` defaults to the model's compiled loss. ``val_data`` adds validation LCA.
    When fit resumes with ``initial_epoch > 0`` and ``store`` holds a run, the callback
    appends to it. Other options go to :class:`lca_core.Allocator` (``per_class``,
    ``store_params``, ``rule``, ``tol``, …) or to the backend (``batch_size``,
    ``bn_policy``).
    """

    def __init__(
        self,
        eval_data: tuple[Any, Any],
        store: str | os.PathLike[str] | None = None,
        *,
        loss_fn: Any = None,
        val_data: tuple[Any, Any] | None = None,
        batch_size: int | None = None,
        bn_policy: str = "batch",
        **options: Any,
    ) -> None:
        super().__init__()
        backend = keras.backend.backend()
        if backend not in SUPPORTED_KERAS_BACKENDS:
            raise RuntimeError(
                f"LCACallback supports KERAS_BACKEND in {SUPPORTED_KERAS_BACKENDS}, not "
                f"{backend!r}; with PyTorch, use lca_torch.Tracker on a torch model instead"
            )
        self.eval_data, self.store, self.loss_fn = eval_data, store, loss_fn
        self.val_data, self.batch_size, self.bn_policy = val_data, batch_size, bn_policy
        self.options = options
        self.allocator: Allocator | None = None
        self.last: StepResult | None = None
        self.summary: dict[str, Any] | None = None
        self._first_epoch: int | None = None
        self._epoch: list[StepResult] = []
        self._step = 0

    # -- building -----------------------------------------------------------------------
    def _backend(self) -> Any:
        options: dict[str, Any] = {"val_data": self.val_data}
        if self.batch_size is not None:
            options["batch_size"] = self.batch_size
        if keras.backend.backend() == "jax":
            from .keras_jax import KerasJaxBackend

            return KerasJaxBackend(self.model, self.loss_fn, self.eval_data, **options)
        from .backend import TFBackend

        return TFBackend(
            self.model, self.loss_fn, self.eval_data, bn_policy=self.bn_policy, **options
        )

    def _start(self) -> None:
        backend = self._backend()
        options = dict(self.options)
        if self.val_data is not None:
            options.setdefault("validation", True)
        resume = bool(self._first_epoch) and _has_run(self.store)
        self.allocator = Allocator(backend, self.store, resume=resume, **options)
        self._step = self.allocator.steps
        self.allocator.start()

    # -- keras hooks ----------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._epoch = []

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.allocator is None:
            self._start()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.allocator is not None
        self.last = self.allocator.advance(step_index=self._step)
        self._step += 1
        self._epoch.append(self.last)
        if logs is not None:
            logs["lca_residual"] = self.last.residual
            logs["lca_pct_helped"] = self.last.pct_helped

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self._epoch:
            return
        logs["lca_residual"] = float(np.mean([abs(r.residual) for r in self._epoch]))
        logs["lca_pct_helped"] = float(np.mean([r.pct_helped for r in self._epoch]))
        logs["lca_sum"] = float(sum(r.lca.sum() for r in self._epoch))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.allocator is not None:
            self.summary = self.allocator.close()
