"""A Lightning callback: one optimizer step = one LCA step, gradient accumulation aware."""

from __future__ import annotations

from typing import Any

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "lca_torch.lightning needs Lightning: pip install 'loss-change-allocation[lightning]'"
    ) from exc

from lca_core.callback import LCACallbackBase
from lca_core.contract import integration
from lca_core.dashboards import EpochSums, log_targets

from .tracker import Tracker


@integration(bn_policy="batch", device=None, resident_bytes=None)
class LCACallback(LCACallbackBase, Callback):
    """``Trainer(callbacks=[LCACallback((x, y), "run", loss_fn=nn.CrossEntropyLoss())])``.

    The module's ``forward`` and ``loss_fn(output, target)`` (default: the module's
    ``loss_fn`` attribute) define the loss on the fixed evaluation set ``data``. Each
    allocated step's numbers (``lca/layer/<layer>``, …: docs/api.md) go to every logger of
    the trainer (TensorBoardLogger, CSVLogger, MLFlowLogger, WandbLogger, …) at the
    trainer's global step, every ``log_every``-th step; the epoch's sums go into
    ``trainer.callback_metrics`` under the same names (for ``EarlyStopping`` and the like).

    Args and errors: those of :class:`lca_core.callback.LCACallbackBase` (``data``,
    ``store``, ``loss_fn``, the common options and this framework's).
    """

    _in_step = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss_fn = self.loss_fn or getattr(pl_module, "loss_fn", None)
        if loss_fn is None:
            raise TypeError(
                "LCACallback needs the loss: pass loss_fn=... (a function of (output, target)) "
                "or give the LightningModule a `loss_fn` attribute"
            )
        opts = dict(self.opts)
        if opts["optimizer"] is True:  # the trainer's own
            if len(trainer.optimizers) != 1:
                raise ValueError(
                    f"optimizer=True splits by the trainer's optimizer, and this trainer has "
                    f"{len(trainer.optimizers)}; pass the one to split by: optimizer=..."
                )
            opts["optimizer"] = trainer.optimizers[0]
        opts["log_to"] = [*log_targets(opts["log_to"]), *trainer.loggers]
        self.tracker = Tracker(pl_module, loss_fn, self.data, **opts)
        steps = trainer.estimated_stepping_batches
        if isinstance(steps, int) and steps > 0:
            self.tracker.expected_steps = steps

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        assert self.tracker is not None
        self.tracker.begin()
        self._in_step = True

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._in_step:  # an accumulation batch: no optimizer step was taken
            return
        assert self.tracker is not None
        self._in_step = False
        result = self.tracker.end()
        if result is not None:
            self._epoch.add(result)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.tracker is not None
        self._epoch = EpochSums(self.tracker.dashboard.metrics)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the loggers have every step already: the epoch's sums are for callbacks
        assert self.tracker is not None
        if values := self._epoch.values(self.tracker.budget_used):
            pl_module.log_dict(values, on_step=False, on_epoch=True, logger=False)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()
