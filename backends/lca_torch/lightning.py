"""A Lightning callback: one optimizer step = one LCA step, gradient accumulation aware."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "lca_torch.LCACallback needs Lightning: pip install 'loss-change-allocation[lightning]'"
    ) from exc

from .tracker import Tracker


class LCACallback(Callback):
    """``Trainer(callbacks=[LCACallback(loss_fn, (x, y), store="run")])``.

    The model's ``forward`` and ``loss_fn(output, target)`` define the loss on the fixed
    evaluation set; per-step residual and % helped are logged as ``lca/residual`` and
    ``lca/pct_helped``. Other options are :class:`Tracker` options.
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        eval_data: Any,
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.loss_fn, self.eval_data, self.store, self.options = loss_fn, eval_data, store, options
        self.tracker: Tracker | None = None
        self.summary: dict[str, Any] | None = None
        self._in_step = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.tracker = Tracker(pl_module, self.loss_fn, self.eval_data, self.store, **self.options)

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
            pl_module.log("lca/residual", result.residual, on_step=True, on_epoch=False)
            pl_module.log("lca/pct_helped", result.pct_helped, on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.tracker is not None:
            self.summary = self.tracker.close()
