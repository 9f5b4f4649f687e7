"""``Tracker``: LCA for a plain PyTorch training loop, one or two lines around the step.

tracker = Tracker(model, nn.CrossEntropyLoss(), (x_train, y_train), store="run")
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    with tracker.step():
        optimizer.step()
    optimizer.zero_grad()
tracker.close()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lca_core import Allocator, StepResult
from lca_core.store import RunWriter, array_specs

from .backend import TorchBackend


class Tracker:
    """Allocates the loss change of every ``every``-th block of optimizer steps.

    ``record_only=True`` stores the trajectory θ_t and evaluates nothing (replay it later
    with :func:`lca_core.replay`). Other keyword options go to :class:`lca_core.Allocator`
    (``per_class``, ``validation``, ``store_params``, ``strict``, …) or to the backend
    (``val_data``, ``batch_size``, ``bn_policy``, ``device``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data: Any,
        store: str | os.PathLike[str] | None = None,
        *,
        rule: str = "simpson",
        tol: float = 1e-3,
        every: int = 1,
        record_only: bool = False,
        progress: bool = False,
        val_data: Any = None,
        batch_size: int | None = None,
        bn_policy: str = "batch",
        device: torch.device | str | None = None,
        **options: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of optimizer steps, not {every}")
        backend_options = {"val_data": val_data, "bn_policy": bn_policy, "device": device}
        if batch_size is not None:
            backend_options["batch_size"] = batch_size
        self.backend = TorchBackend(model, loss_fn, data, **backend_options)
        if val_data is not None:
            options.setdefault("validation", True)
        self.every, self.record_only = every, record_only
        self.optimizer_steps = 0
        self.last: StepResult | None = None
        self._started = False
        self._last_theta: np.ndarray | None = None
        self._bar = tqdm(desc="LCA", unit="step", disable=not progress, leave=False)
        if record_only:
            if store is None:
                raise ValueError("record_only=True needs a store directory to record into")
            layout = self.backend.layout
            self._writer: RunWriter | None = RunWriter(
                store,
                layout,
                array_specs(layout, store_trajectory=True, lca=False),
                attrs={
                    "policy": self.backend.policy(),
                    "backend": "TorchBackend",
                    "metadata": dict(options.pop("metadata", {})),
                },
            )
            self.allocator: Allocator | None = None
        else:
            self._writer = None
            self.allocator = Allocator(self.backend, store, rule=rule, tol=tol, **options)
            self.optimizer_steps = self.allocator.steps * every  # resumed runs continue

    # -- the two calls around optimizer.step() -----------------------------------------------
    def begin(self) -> None:
        """Call just before ``optimizer.step()``: marks θ_t (the first call evaluates it)."""
        if self._started:
            self._check_untouched()
            return
        snap = self.backend.snapshot()
        if self.allocator is not None:
            self.allocator.start(snap)
        else:
            assert self._writer is not None
            self._writer.start("trajectory", {"theta": snap.theta})
        self._last_theta = snap.theta
        self._started = True

    def end(self) -> StepResult | None:
        """Call just after ``optimizer.step()``; allocates when a block of ``every`` is done."""
        if not self._started:
            raise RuntimeError("Tracker.end() before begin(): call begin() before the step")
        self.optimizer_steps += 1
        if self.optimizer_steps % self.every:
            return None
        snap = self.backend.snapshot()
        if self.allocator is None:
            assert self._writer is not None
            self._writer.append("trajectory", {}, {"theta": snap.theta})
        else:
            self.last = self.allocator.advance(snap, step_index=self.optimizer_steps - 1)
            self._bar.set_postfix(
                residual=f"{self.last.residual:.1e}", helped=f"{self.last.pct_helped:.1f}%"
            )
        self._last_theta = snap.theta
        self._bar.update()
        return self.last

    @contextmanager
    def step(self) -> Iterator[None]:
        """``with tracker.step(): optimizer.step()``."""
        self.begin()
        yield
        self.end()

    def _check_untouched(self) -> None:
        """Parameters changed between two tracked steps would be a loss change nobody owns."""
        if self.optimizer_steps % self.every:
            return  # inside a block of `every` steps: the block's endpoints are what count
        if not np.array_equal(self.backend.snapshot().theta, self._last_theta):
            raise RuntimeError(
                "the model's parameters changed between two tracked optimizer steps (outside "
                "`with tracker.step()`), so that change would be allocated to no one. Put "
                "every update (clipping, weight decay by hand, EMA swaps) inside the block."
            )

    # -- results --------------------------------------------------------------------------
    @property
    def gradient_passes(self) -> int:
        return self.allocator.gradient_passes if self.allocator is not None else 0

    def summary(self) -> dict[str, Any]:
        if self.allocator is None:
            return {"recorded_steps": self.optimizer_steps // self.every}
        return self.allocator.summary()

    def close(self) -> dict[str, Any]:
        """Flush the store and return the summary (raises if strict and over budget)."""
        self._bar.close()
        if self.allocator is None:
            assert self._writer is not None
            self._writer.close()
            return self.summary()
        return self.allocator.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
