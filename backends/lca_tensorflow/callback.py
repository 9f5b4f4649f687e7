"""``LCACallback``: LCA for an unmodified ``model.fit``.

    model.fit(x, y, epochs=3, callbacks=[LCACallback((x, y), "run")])

Each executed train step (a block of ``steps_per_execution`` batches) is one optimizer
step. Each step's ``lca/residual`` and ``lca/pct_helped`` go into the batch logs (progress
bar); the epoch's sums of every number (``lca/loss_change``, ``lca/layer/<layer>``, …:
docs/api.md) into the epoch logs, so ``History``, the progress bar, ``CSVLogger`` and
Keras' own ``TensorBoard`` record them — list this callback before those.
"""

from __future__ import annotations

import keras

from lca_core.callback import LCACallbackBase
from lca_core.contract import integration
from lca_core.dashboards import EpochSums

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

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        assert self.tracker is not None
        self._epoch = EpochSums(self.tracker.dashboard.metrics)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        assert self.tracker is not None
        self.tracker.begin()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.tracker is not None
        result = self.tracker.end()
        if result is None:
            return
        self._epoch.add(result)
        if logs is not None:
            logs["lca/residual"] = result.residual
            logs["lca/pct_helped"] = result.pct_helped

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:  # the same dict every later callback (History, …) reads
            assert self.tracker is not None
            logs.update(self._epoch.values(self.tracker.budget_used))

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close()
