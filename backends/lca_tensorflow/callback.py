"""``LCACallback``: LCA for an unmodified ``model.fit``.

    model.fit(x, y, epochs=3, callbacks=[LCACallback((x, y), "run")])

Each executed train step (a block of ``steps_per_execution`` batches) is one optimizer
step. Per-step figures go into the batch logs (progress bar); epoch means
(``lca_residual``, ``lca_pct_helped``, ``lca_sum``) into the epoch logs, so ``History``
and Keras' own ``TensorBoard`` callback record them — list this callback before those.
"""

from __future__ import annotations

import keras
import numpy as np

from lca_core import StepResult
from lca_core.callback import LCACallbackBase
from lca_core.contract import integration

from .tracker import Tracker, keras_backend


@integration(bn_policy="batch", resident_bytes=None)
class LCACallback(LCACallbackBase, keras.callbacks.Callback):
    """Allocates every train step's loss change on ``data``; ``loss_fn`` defaults to the
    model's compiled loss. To continue a run when fit resumes (``initial_epoch``), pass
    ``resume=True``. Options: see ``docs/api.md``.

    Args and errors: those of :class:`lca_core.callback.LCACallbackBase` (``data``,
    ``store``, ``loss_fn``, the common options and this framework's).
    """

    def check_framework(self) -> None:
        keras_backend()  # refuse an unsupported Keras backend now, not inside fit

    # -- keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        opts = dict(self.opts)
        if opts["optimizer"] is True:  # the model's compiled optimizer
            opts["optimizer"] = self.model.optimizer
        if opts["optimizer"] is not None and getattr(self.model, "steps_per_execution", 1) > 1:
            raise ValueError(
                "optimizer= splits each optimizer step, and with steps_per_execution > 1 "
                "Keras calls callbacks once per several steps; compile with "
                "steps_per_execution=1 to split"
            )
        self.tracker = Tracker(self.model, self.loss_fn, self.data, **opts)
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if steps and epochs:
            self.tracker.expected_steps = steps * epochs
        self._epoch: list[StepResult] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = []

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        assert self.tracker is not None
        self.tracker.begin()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.tracker is not None
        result = self.tracker.end()
        if result is None:
            return
        self._epoch.append(result)
        if logs is not None:
            logs["lca_residual"] = result.residual
            logs["lca_pct_helped"] = result.pct_helped

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self._epoch:
            return
        logs["lca_residual"] = float(np.mean([abs(r.residual) for r in self._epoch]))
        logs["lca_pct_helped"] = float(np.mean([r.pct_helped for r in self._epoch]))
        logs["lca_sum"] = float(sum(r.lca.sum() for r in self._epoch))

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close()
