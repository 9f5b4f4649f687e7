"""What every fit-loop callback shares (Keras ``model.fit``, Lightning, the Hugging Face
``Trainer``): one signature, options checked when the callback is made (not at the first
batch), a framework :class:`~lca_core.Tracker` built when fit starts, one summary.

A framework's callback inherits this base first and its framework's callback class second,
and calls ``begin``/``end`` of ``self.tracker`` around each optimizer step.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

from .contract import renamed, resolve_options
from .engine.step import StepResult
from .engine.summary import Summary
from .tracker import Tracker


class LCACallbackBase:
    """``LCACallback(data, store=None, *, loss_fn=None, **options)`` in every framework.

    Args:
        data: the evaluation set (inputs, targets), or what the framework's backend takes.
        store: the run directory to write (None keeps only the summary in memory).
        loss_fn: the loss (default: the model's own, where the framework has one).
        **options: the common options (docs/api.md) and the framework's own.

    Raises:
        UnknownOptionError: an option no callback takes (the message names the valid ones).
        TypeError: no evaluation data.
    """

    #: the framework's own options and their defaults (set by ``contract.integration``)
    framework_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        data: Any = None,
        store: str | os.PathLike[str] | None = None,
        *legacy: Any,
        loss_fn: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()  # the framework's callback class
        self.check_framework()
        owner = f"{type(self).__module__.split('.')[0]}.LCACallback"
        if legacy or (callable(data) and store is not None and not _is_path(store)):
            # 0.1's Lightning order: LCACallback(loss_fn, eval_data, store)
            warnings.warn(
                f"{owner}(loss_fn, data, store) is deprecated; use "
                "LCACallback(data, store, loss_fn=loss_fn), the order of every framework",
                DeprecationWarning,
                stacklevel=3,
            )
            loss_fn, data, store = data, store, legacy[0] if legacy else None
        options = renamed(dict(options), owner)
        if "data" in options:
            if callable(data) and loss_fn is None:  # 0.1's LCACallback(loss_fn, eval_data=...)
                loss_fn = data
            data = options.pop("data")
        if data is None:
            raise TypeError(f"{owner} needs the evaluation data: LCACallback(data, store, ...)")
        self.opts = resolve_options({**options, "store": store}, owner, self.framework_options)
        self.data, self.loss_fn = data, loss_fn
        self.tracker: Tracker | None = None
        self._summary: Summary | None = None

    def check_framework(self) -> None:
        """Refuse a framework setup the callback cannot serve, when it is made (not in fit)."""

    @property
    def last(self) -> StepResult | None:
        """The most recent step's result (None before the first allocated step)."""
        return self.tracker.last if self.tracker is not None else None

    @property
    def gradient_passes(self) -> int:
        return self.tracker.gradient_passes if self.tracker is not None else 0

    def summary(self) -> Summary:
        """The run's summary: final after fit ends, running while it trains."""
        if self._summary is not None:
            return self._summary
        if self.tracker is None:
            raise RuntimeError("the callback has not seen training start yet; no summary")
        return self.tracker.summary()

    def _close(self) -> None:
        if self.tracker is not None and self._summary is None:
            self._summary = self.tracker.close()


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)
