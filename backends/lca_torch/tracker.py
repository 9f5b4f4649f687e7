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

import numpy as np
import torch
from torch import nn

from lca_core import Allocation
from lca_core.contract import integration, resolve_options
from lca_core.layout import flat_vector
from lca_core.tracker import Tracker as CoreTracker
from lca_core.tracker import allocate_step

from .backend import TorchBackend, host_array

LossFn = Callable[[Any, Any], torch.Tensor]


@integration(bn_policy="batch", device=None, resident_bytes=None)
class Tracker(CoreTracker):
    """Allocates the loss change of every (``every``-th block of) optimizer step(s).

    ``loss_fn(output, target)`` may return the batch mean or each example's loss
    (``reduction="none"``); both give the same L(θ). Options: see ``docs/api.md``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        store: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        opts = resolve_options(
            {**options, "store": store}, "lca_torch.Tracker", type(self).framework_options
        )
        backend_options = {
            k: opts[k] for k in ("val_data", "bn_policy", "device", "resident_bytes")
        }
        if opts["batch_size"] is not None:
            backend_options["batch_size"] = opts["batch_size"]
        self._setup(TorchBackend(model, loss_fn, data, **backend_options), opts)

    def flatten(self, params: Any) -> np.ndarray:
        """θ from a state-dict-like mapping (name → tensor) or the model itself."""
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
        return flat_vector(host_array(params[p.name].detach()) for p in self.backend.layout.params)


def allocate(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    **options: Any,
) -> Allocation:
    """LCA of one step ``before → after`` (mappings name → tensor, like a state dict).

    ``lca`` maps each trainable parameter's name to a float64 tensor of its shape.
    """
    tracker = Tracker(model, loss_fn, data, **options)
    result = allocate_step(tracker, before, after)
    lca = {k: torch.from_numpy(v) for k, v in tracker.backend.layout.split(result.lca).items()}
    return Allocation(lca, result.residual, result)
