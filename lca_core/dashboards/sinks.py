"""Where the numbers go: one small adapter per dashboard kind, on a shared base.

``log_to=`` takes a ``torch.utils.tensorboard`` or tensorboardX ``SummaryWriter``, a
``tf.summary`` writer, the ``mlflow`` module or an MLflow run, a W&B run, a Lightning
logger, a :class:`Sink`, or any callable ``(step, metrics)``; a list of them too. A
dashboard is recognised by its type's module and what it has, so ``lca_core`` imports
none of these libraries: the adapter uses the library the object came from.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from .alerts import Alert

#: the tag of the text events alerts become, where a dashboard has them
ALERT_TAG = "lca/alerts"


class Sink:
    """A dashboard the numbers of a run's steps go to. ``step`` is the optimizer step
    (the trainer's global step: 1 after the first)."""

    #: what the warnings call it
    name = "a dashboard"

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError

    def alert(self, alert: Alert) -> None:
        """An alert, as the dashboard's own event where it has one (default: none)."""

    def flush(self) -> None:
        """Write what the dashboard buffers (at the run's end)."""


class CallableSink(Sink):
    def __init__(self, fn: Callable[[int, dict[str, float]], Any]) -> None:
        self.fn, self.name = fn, getattr(fn, "__qualname__", repr(fn))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.fn(step, dict(metrics))


class ScalarWriterSink(Sink):
    """``add_scalar(tag, value, step)`` writers: torch's and tensorboardX's
    ``SummaryWriter`` (alerts as ``add_text``)."""

    def __init__(self, writer: Any) -> None:
        self.writer, self.name = writer, f"{type(writer).__module__}.{type(writer).__name__}"

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def alert(self, alert: Alert) -> None:
        if hasattr(self.writer, "add_text"):
            self.writer.add_text(ALERT_TAG, alert.message, alert.step)

    def flush(self) -> None:
        self.writer.flush()


class TFSummarySink(Sink):
    """A ``tf.summary.create_file_writer`` writer (alerts as ``tf.summary.text``)."""

    name = "a tf.summary writer"

    def __init__(self, writer: Any) -> None:
        self.writer, self.tf = writer, sys.modules["tensorflow"]

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        with self.writer.as_default(step=step):
            for tag, value in metrics.items():
                self.tf.summary.scalar(tag, value)

    def alert(self, alert: Alert) -> None:
        with self.writer.as_default(step=alert.step):
            self.tf.summary.text(ALERT_TAG, alert.message)

    def flush(self) -> None:
        self.writer.flush()


class MlflowSink(Sink):
    """The ``mlflow`` module (its active run, as ``mlflow.log_metrics`` starts one) or an
    MLflow ``Run`` (through ``MlflowClient``), logged asynchronously (MLflow's own
    background queue, flushed at the run's end) so that a tracking server's round trip is
    not the step's. MLflow has no events: an alert sets the tag ``lca.alert.<kind>`` to its
    latest message."""

    name = "MLflow"

    def __init__(self, target: Any) -> None:
        self.mlflow = sys.modules["mlflow"]
        self.run_id = None if inspect.ismodule(target) else target.info.run_id
        self.client = self.mlflow.MlflowClient() if self.run_id else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.client is None:
            self.mlflow.log_metrics(dict(metrics), step=step, synchronous=False)
            return
        now = int(time.time() * 1000)
        Metric = self.mlflow.entities.Metric
        rows = [Metric(key, value, now, step) for key, value in metrics.items()]
        for start in range(0, len(rows), 1000):  # MLflow takes 1000 metrics a batch
            self.client.log_batch(
                self.run_id, metrics=rows[start : start + 1000], synchronous=False
            )

    def alert(self, alert: Alert) -> None:
        key, text = f"lca.alert.{alert.kind}", f"step {alert.step}: {alert.message}"
        if self.client is None:
            self.mlflow.set_tag(key, text)
        else:
            self.client.set_tag(self.run_id, key, text)

    def flush(self) -> None:
        self.mlflow.flush_async_logging()


class WandbSink(Sink):
    """A W&B run: the numbers are plotted against ``lca/step`` (W&B's own step counts
    ``log`` calls), alerts are W&B alerts."""

    name = "W&B"

    def __init__(self, run: Any) -> None:
        self.run = run
        run.define_metric("lca/step")
        run.define_metric("lca/*", step_metric="lca/step")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({**metrics, "lca/step": step})

    def alert(self, alert: Alert) -> None:
        self.run.alert(title=f"LCA: {alert.kind}", text=alert.message, level="WARN")


class LoggerSink(Sink):
    """A Lightning logger (``log_metrics(metrics, step)``): TensorBoardLogger, CSVLogger,
    MLFlowLogger, WandbLogger, …"""

    def __init__(self, logger: Any) -> None:
        self.logger, self.name = logger, type(logger).__name__

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.logger.log_metrics(dict(metrics), step=step)

    def flush(self) -> None:
        if hasattr(self.logger, "save"):
            self.logger.save()


def _library(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def sink_for(target: Any) -> Sink:
    """The adapter for one ``log_to`` target (TypeError for what is none of them)."""
    if isinstance(target, Sink):
        return target
    if inspect.ismodule(target) and target.__name__ == "mlflow":
        return MlflowSink(target)
    library = _library(target)
    if library == "mlflow" and hasattr(getattr(target, "info", None), "run_id"):
        return MlflowSink(target)
    if library == "wandb" and hasattr(target, "define_metric"):
        return WandbSink(target)
    if library == "tensorflow" and hasattr(target, "as_default"):
        return TFSummarySink(target)
    if hasattr(target, "add_scalar"):
        return ScalarWriterSink(target)
    if hasattr(target, "log_metrics") and hasattr(target, "log_hyperparams"):
        return LoggerSink(target)
    if callable(target) and not inspect.ismodule(target):
        return CallableSink(target)
    raise TypeError(
        f"log_to= does not know {type(target).__name__!r}: give a SummaryWriter "
        "(torch.utils.tensorboard or tensorboardX), a tf.summary writer, the mlflow module "
        "or an MLflow run, a W&B run, a Lightning logger, an lca_core.dashboards.Sink, or a "
        "function (step, metrics) — or a list of these"
    )


def log_targets(log_to: Any) -> list[Any]:
    """The targets of ``log_to`` (None, one, or a list or tuple of them) as a list, to
    which a fit callback adds its trainer's loggers."""
    if log_to is None:
        return []
    return list(log_to) if isinstance(log_to, list | tuple) else [log_to]


def sinks_for(log_to: Any) -> list[Sink]:
    """The adapter of every target of ``log_to``."""
    return [sink_for(t) for t in log_targets(log_to)]
