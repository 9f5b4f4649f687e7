"""A subset's groups evaluated in one vectorized call (torch.func.vmap): the same losses
and gradients as one pass per group, BatchNorm in batch mode included, and a model vmap
cannot run falls back to one pass per group."""

import numpy as np
import pytest
import torch
from lca_torch import TorchBackend
from torch import nn

from lca_core.arrays import to_host


def _model(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(12)] if batchnorm else []
    return nn.Sequential(nn.Linear(8, 12), *norm, nn.ReLU(), nn.Linear(12, 3))


def _data(n: int = 400):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _groups(backend: TorchBackend, theta: np.ndarray):
    (ev,) = backend.evaluate([theta], per_class=True)
    return ev.class_losses, ev.class_grads


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("batch_size", [4096, 5], ids=["one_chunk", "chunks"])
def test_vectorized_groups_equal_one_pass_per_group(batchnorm, batch_size):
    model = _model(batchnorm)
    vectorized = TorchBackend(model, nn.CrossEntropyLoss(), _data(), batch_size=batch_size)
    looped = TorchBackend(model, nn.CrossEntropyLoss(), _data(), batch_size=batch_size)
    for backend in (vectorized, looped):
        backend.use_subset(160, seed=2)
    vectorized.group_evaluation, looped.group_evaluation = "vectorized", "loop"
    theta = to_host(vectorized.snapshot().theta, np.float64) + 0.01
    losses, grads = _groups(vectorized, theta)
    assert vectorized._vmap_works and looped._vmap_works is None  # vmap ran, or was not tried
    want_losses, want_grads = _groups(looped, theta)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(grads, want_grads, rtol=1e-5, atol=1e-8)
    assert grads.shape == (16, vectorized.layout.size) and np.all(np.abs(grads).sum(1) > 0)
    # a new draw (resample): the stacked groups follow the subset
    vectorized.use_subset(160, seed=2, resample="shared")
    vectorized.draw_subset(5)
    redrawn, _ = _groups(vectorized, theta)
    assert not np.allclose(redrawn, losses)


class _Indexing(nn.Module):
    """A model whose forward vmap cannot run (a data-dependent .item())."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * (1.0 if x.sum().item() > -1e9 else 0.0)


def test_auto_times_each_way_on_the_first_passes_and_keeps_the_faster():
    backend = TorchBackend(_model(False), nn.CrossEntropyLoss(), _data())
    backend.use_subset(160, seed=2)
    theta = to_host(backend.snapshot().theta, np.float64)
    first = _groups(backend, theta)
    assert backend.policy()["groups"] == "auto" and backend._group_mode() == "timing"
    for _ in range(2):  # vectorized (timed), then the loop (timed)
        again = _groups(backend, theta)
        np.testing.assert_allclose(again[1], first[1], rtol=1e-5, atol=1e-8)
    seconds = backend._group_seconds
    assert set(seconds) == {"vectorized", "loop"}
    assert backend._group_mode() == min(seconds, key=seconds.get)


def test_a_model_vmap_cannot_run_is_evaluated_group_by_group(caplog):
    model = _Indexing()
    backend = TorchBackend(model, nn.CrossEntropyLoss(), _data())
    backend.use_subset(160, seed=2)
    theta = to_host(backend.snapshot().theta, np.float64)
    with caplog.at_level("INFO", logger="lca"):
        losses, grads = _groups(backend, theta)
    assert backend._group_mode() == "loop"
    assert "does not run under torch.func.vmap" in caplog.text
    (whole,) = backend.evaluate([theta])  # the subset in one pass
    assert losses.sum() == pytest.approx(whole.loss, rel=1e-6)
    np.testing.assert_allclose(grads.sum(0), whole.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bn_policy", ["batch", "running"])
def test_the_loss_alone_is_a_gradient_passes_loss_and_leaves_the_model_alone(bn_policy):
    """A resampled run's check evaluates the full set's loss in a forward pass alone."""
    model = _model(batchnorm=True)
    model.train()
    backend = TorchBackend(
        model, nn.CrossEntropyLoss(), _data(), batch_size=64, bn_policy=bn_policy
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    theta = to_host(backend.snapshot().theta, np.float64) + 0.02
    (ev,) = backend.evaluate([theta])
    assert backend.evaluate_loss(theta) == pytest.approx(ev.loss, rel=1e-6)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert model.training and all(p.grad is None for p in model.parameters())
