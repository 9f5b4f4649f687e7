"""Where a model keeps its parameters and buffers, to lend it other tensors for a while.

``torch.func.functional_call`` does the same at every call: it walks the model for tied
weights, resolves every dotted name to its module and checks each swap — several % of a
small model's gradient pass (benchmarks/README.md). The places are found once here
(every alias of a tied weight included); lending is then a dictionary write per place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

#: one place a tensor is held: the owning module's ``_parameters`` or ``_buffers``, and key
_Place = tuple[dict[str, torch.Tensor | None], str]


class Places:
    """Every place of each parameter and buffer of ``model``, under its first name (the one
    ``named_parameters`` / ``named_buffers`` give)."""

    def __init__(self, model: nn.Module) -> None:
        self.places: dict[str, list[_Place]] = {}
        for members, slot in (
            (model.named_parameters, "_parameters"),
            (model.named_buffers, "_buffers"),
        ):
            first: dict[int, str] = {}
            for name, tensor in members(remove_duplicate=False):
                owner, _, key = name.rpartition(".")
                held = getattr(model.get_submodule(owner), slot)
                self.places.setdefault(first.setdefault(id(tensor), name), []).append((held, key))
        self.buffer_names = [name for name, _ in model.named_buffers()]

    def buffers(self) -> dict[str, torch.Tensor]:
        """The model's buffers now, by first name (a module may have replaced one)."""
        out = {}
        for name in self.buffer_names:
            held, key = self.places[name][0]
            if (tensor := held[key]) is not None:  # as named_buffers, which skips None
                out[name] = tensor
        return out

    @contextmanager
    def lent(self, tensors: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """The model holds ``tensors`` (by first name) in every place of theirs inside the
        block, and its own tensors again after it, whatever the forward did meanwhile."""
        own = [(held, key, held[key]) for name in tensors for held, key in self.places[name]]
        try:
            for name, tensor in tensors.items():
                for held, key in self.places[name]:
                    held[key] = tensor
            yield
        finally:
            for held, key, tensor in own:
                held[key] = tensor
