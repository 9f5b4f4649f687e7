"""A Hugging Face ``transformers.Trainer`` callback: one optimizer step = one LCA step.

    trainer = Trainer(model, args, train_dataset=train, callbacks=[LCACallback(eval_set, "run")])
    trainer.train()   # unmodified

By default L(θ) is the model's own loss output (``model(**batch).loss``) on ``data``,
collated by the trainer's data collator in fixed, unshuffled chunks. Gradient accumulation
and gradient clipping are inside the step: the callback marks θ just before
``optimizer.step()`` and allocates just after it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "lca_torch.hf needs transformers: pip install 'loss-change-allocation[hf]'"
    ) from exc

from lca_core.callback import LCACallbackBase
from lca_core.contract import integration
from lca_core.dashboards import log_targets

from .tracker import Tracker

LOG = logging.getLogger("lca")


def model_loss(output: Any, target: Any) -> torch.Tensor:
    """The loss a Hugging Face model returns when its batch holds labels."""
    loss = getattr(output, "loss", None)
    if loss is None:
        raise ValueError(
            "the model returned no loss on the evaluation data: give the examples labels "
            "(e.g. a language-modelling collator) or pass loss_fn=(output, target) -> loss"
        )
    return loss


@integration(bn_policy="batch", device=None, resident_bytes=None)
class LCACallback(LCACallbackBase, TrainerCallback):
    """``Trainer(..., callbacks=[LCACallback(data, store)])``; ``data`` is a dataset of
    examples (collated with the trainer's collator), a DataLoader, or (inputs, targets).

    Each allocated step's numbers (``lca/layer/<layer>``, …: docs/api.md) go where the
    trainer's own logs go, at its global step: ``state.log_history`` (an entry of their own
    per step) and what ``report_to`` names (``tensorboard``: a ``lca`` run beside the
    trainer's, in ``TENSORBOARD_LOGGING_DIR`` or ``output_dir/runs/lca``; ``mlflow``: the
    trainer's active run; ``wandb``: its run). ``batch_size`` defaults to the trainer's
    ``per_device_eval_batch_size``.

    Args and errors: those of :class:`lca_core.callback.LCACallbackBase` (``data``,
    ``store``, ``loss_fn``, the common options and this framework's).
    """

    _writer: Any = None  # the TensorBoard writer this callback opened, if any

    def _loader(self, batch_size: int, train_dataloader: Any) -> Any:
        """``data`` as fixed chunks: a dataset is collated with the trainer's collator."""
        if isinstance(self.data, torch.utils.data.DataLoader | tuple):
            return self.data
        collate = getattr(train_dataloader, "collate_fn", None)
        return torch.utils.data.DataLoader(
            self.data, batch_size=batch_size, shuffle=False, collate_fn=collate
        )

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        opts = dict(self.opts)
        if opts["batch_size"] is None:
            opts["batch_size"] = args.per_device_eval_batch_size
        data = self._loader(opts["batch_size"], train_dataloader)
        if opts["optimizer"] is True:  # the trainer's own
            opts["optimizer"] = kwargs.get("optimizer")
            if opts["optimizer"] is None:
                raise RuntimeError("optimizer=True: the trainer passed no optimizer to callbacks")
        opts["log_to"] = [
            *log_targets(opts["log_to"]),
            *self._report_to(args),
            lambda step, metrics: state.log_history.append(
                {**metrics, "epoch": state.epoch, "step": step}
            ),
        ]
        self.tracker = Tracker(model, self.loss_fn or model_loss, data, **opts)
        if state.max_steps and state.max_steps > 0:
            self.tracker.expected_steps = state.max_steps

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        assert self.tracker is not None
        self.tracker.begin()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        assert self.tracker is not None
        self.tracker.end()

    def _report_to(self, args: TrainingArguments) -> list[Any]:
        """The dashboards ``report_to`` names, as the trainer's own callbacks set them up
        (they start before this one)."""
        names, out = set(args.report_to or ()), []
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # as transformers does
                from tensorboardX import SummaryWriter
            logdir = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(
                args.output_dir or ".", "runs", "lca"
            )
            self._writer = SummaryWriter(log_dir=logdir)
            out.append(self._writer)
        if "mlflow" in names:
            import mlflow

            if mlflow.active_run() is not None:
                out.append(mlflow)
            else:
                LOG.warning("LCA: report_to names mlflow, but no MLflow run is active")
        if "wandb" in names:
            import wandb

            if wandb.run is not None:
                out.append(wandb.run)
            else:
                LOG.warning("LCA: report_to names wandb, but no W&B run is active")
        return out

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._close()
        if self._writer is not None:
            self._writer.close()
