"""lca's arithmetic on torch tensors (``arithmetic="device"``, the default): no K-long
tensor crosses to or from the host during a tracked step unless something per-parameter
is asked for, and the step is the host reference's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lca_torch import Tracker
from torch import nn
from torch.overrides import TorchFunctionMode

from lca_core.arrays import Kernels, compensated_sum, joined

#: the tensor methods that move data between the host and a device (``.to`` too, where
#: it is given a device: ``.to(dtype)`` is a cast where the tensor is)
_CROSSINGS = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__array__}


def _moves(args, kwargs) -> bool:
    where = [*args[1:], kwargs.get("device")]
    return any(isinstance(a, str | torch.device | torch.Tensor) for a in where)


class KLongCrossings(TorchFunctionMode):
    """Counts calls that move (or may move) a tensor of at least ``k`` elements between
    the host and a device: ``.cpu()``, ``.numpy()``, ``np.asarray(t)``, ``.to(...)`` and
    ``torch.from_numpy`` / ``torch.as_tensor`` of a host array."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.seen = k, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        moved = func in _CROSSINGS or (func is torch.Tensor.to and _moves(args, kwargs))
        first = args[0] if args else None
        made = func in (torch.from_numpy, torch.as_tensor) and isinstance(first, np.ndarray)
        if (moved and first.numel() >= self.k) or (made and first.size >= self.k):
            self.seen.append(func.__name__)
        return func(*args, **kwargs)


def _train(arithmetic: str, steps: int = 3, **options):
    torch.manual_seed(0)
    x, y = torch.randn(96, 10), torch.randint(0, 3, (96,))
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), arithmetic=arithmetic, **options)
    k = tracker.backend.layout.size
    counter = KLongCrossings(k)
    results = []
    for step in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
        if step == 0:
            tracker.begin()  # θ_0 evaluated before the counted steps
            opt.step()
            results.append(tracker.end())
            continue
        with counter, tracker.step():
            opt.step()
        results.append(tracker.last)
    tracker.close()
    return results, counter.seen


@pytest.mark.parametrize(
    "options",
    [{}, {"per_class": True}, {"eval_subset": 48}, {"rule": "auto"}],
    ids=["whole", "per_class", "subset", "auto"],
)
def test_no_k_long_tensor_crosses_to_the_host_during_a_step(options):
    """Nothing per-parameter stored or read: θ, Δ, the nodes, the gradients' sums and A
    stay tensors; only per-layer numbers come to the host. The same count on the host
    path proves the counter sees the crossings it is meant to."""
    device, crossings = _train("device", **options)
    assert crossings == []
    host, host_crossings = _train("host", **options)
    assert len(host_crossings) >= 2  # every gradient, and every θ given to the model
    for a, b in zip(device, host, strict=True):
        assert isinstance(a.lca_array, torch.Tensor) and isinstance(b.lca_array, np.ndarray)
        # float32 vectors with float64 sums, against float64 throughout: ~1e-9 measured
        largest = np.abs(b.layer_lca).max()
        np.testing.assert_allclose(a.layer_lca, b.layer_lca, rtol=0, atol=1e-6 * largest)
        assert a.residual == pytest.approx(b.residual, abs=1e-8)
        np.testing.assert_array_equal(a.layer_counts, b.layer_counts)
        assert a.lca.dtype == np.float32  # read: a host copy, in θ's dtype
        np.testing.assert_allclose(a.lca, b.lca, rtol=0, atol=1e-6 * np.abs(b.lca).max())


def test_per_parameter_outputs_are_copied_once_as_float32_when_stored(tmp_path):
    """store_params writes A per step: one float32 copy of it (cast on the device)."""
    _, crossings = _train("device", store=tmp_path / "run", store_params=True)
    # one per counted step, for param_lca: moved as float32 (.to), then read by numpy in
    # place (np.asarray of a host tensor copies nothing)
    assert crossings == ["to", "__array__"] * 2


def test_a_float32_tensor_sum_is_compensated_where_float64_is_missing():
    """The float32 path (Apple's MPS has no float64): on a torch float32 tensor, the
    compensated sum keeps float64's accuracy where torch's own float32 sum drifts."""
    x = torch.full((2**20 + 3,), 0.1, dtype=torch.float32)
    exact = math.fsum(x.double().tolist())
    compensated = float(joined(compensated_sum(x, wide=False)))
    assert abs(compensated - exact) < 1e-9 * exact
    ops = Kernels()
    bounds = (0, 5, 2**20 + 3)
    np.testing.assert_allclose(ops.segment_sums(x, bounds).sum(), exact, rtol=1e-12)
