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
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from lca_core import Allocation, Splitter
from lca_core.contract import integration
from lca_core.layout import flat_vector
from lca_core.tracker import Tracker as CoreTracker
from lca_core.tracker import allocate_step

from .backend import TorchBackend, host_array
from .splitters import make_splitter

LossFn = Callable[[Any, Any], torch.Tensor]


@integration(bn_policy="batch", device=None, resident_bytes=None)
class Tracker(CoreTracker):
    """Allocates the loss change of every (``every``-th block of) optimizer step(s).

    ``loss_fn(output, target)`` may return the batch mean or each example's loss
    (``reduction="none"``); both give the same L(θ).

    Args:
        model: the module being trained (its parameters are read, never changed).
        loss_fn: ``loss_fn(output, target)``.
        data: the fixed evaluation set (see :class:`TorchBackend`).
        store: the run directory to write (None keeps only the summary in memory).
        **options: the common options (docs/api.md) and ``bn_policy``, ``device``,
            ``resident_bytes``.

    Raises:
        UnknownOptionError: an option no tracker takes (the message names the valid ones).
        ValueError: options that cannot work with this model and data.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self._build((model, loss_fn, data), store, options)

    def make_backend(  # type: ignore[override]
        self, model: nn.Module, loss_fn: LossFn, data: Any, **keywords: Any
    ) -> TorchBackend:
        return TorchBackend(model, loss_fn, data, **keywords)

    def find_splitter(self, optimizer: Any) -> Splitter:
        """``optimizer=``: a ``torch.optim`` SGD, RMSprop, Adam or AdamW (or a registered one)."""
        return make_splitter(optimizer, self.backend.parameters)

    def flatten(self, params: Any) -> Any:
        """θ from a state-dict-like mapping (name → tensor) or the model itself: a tensor
        on the backend's device with device arithmetic, else a host vector."""
        if isinstance(params, nn.Module):
            params = dict(params.named_parameters())
        if not isinstance(params, Mapping):
            raise TypeError(
                "give parameters as a mapping name → tensor (e.g. "
                "{n: p.detach().clone() for n, p in model.named_parameters()})"
            )
        missing = [p.name for p in self.backend.layout.params if p.name not in params]
        if missing:
            raise KeyError(f"the parameters lack {missing}; give every trainable parameter")
        tensors = [params[p.name].detach() for p in self.backend.layout.params]
        if self.backend.arithmetic == "device":
            dtypes = {t.dtype for t in tensors}
            dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
            device = self.backend.device
            return torch.cat([t.reshape(-1).to(device, dtype) for t in tensors])  # a copy
        return flat_vector(host_array(t) for t in tensors)


def allocate(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    **options: Any,
) -> Allocation:
    """LCA of one step ``before → after`` (mappings name → tensor, like a state dict).

    Args:
        model, loss_fn, data: as for :class:`Tracker`.
        before, after: the step's two points, name → tensor for every trainable parameter.
        **options: the common options.

    Returns:
        An ``Allocation``: ``lca`` maps each trainable parameter's name to a float64 tensor
        of its shape; ``residual`` is ΔL − Σ LCA; ``result`` the whole ``StepResult``.
    """
    tracker = Tracker(model, loss_fn, data, **options)
    result = allocate_step(tracker, before, after)
    lca = {k: torch.from_numpy(v) for k, v in tracker.backend.layout.split(result.lca).items()}
    return Allocation(lca, result.residual, result)
