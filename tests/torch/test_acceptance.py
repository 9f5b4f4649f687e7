"""The acceptance rule on outside-shaped models at a size CI affords: a CIFAR-shaped CNN
(32×32×3, three conv layers, no BatchNorm) and a small vision transformer (8×8 patches,
two encoder blocks), trained with AdamW and tracked with rule="auto" — the CNN is the case
where accepting each step on its residual against tol alone spent several times the 1 %
budget with no step flagged."""

import warnings

import numpy as np
import pytest
import torch
from lca_torch import Tracker
from torch import nn

import lca_core
import lca_core.allocator
from lca_core import open_run
from lca_core.errors import AccuracyWarning


def cifar_shaped(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with labels a fixed linear map of them decides: a loss that can fall."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    w = torch.randn(3 * 32 * 32, 10, generator=generator)
    return x, (x.flatten(1) @ w).argmax(1)


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )  # fmt: skip


class ViT(nn.Module):
    """A vision transformer's shape: 16 patches of 8×8, width 32, two blocks, mean pool."""

    def __init__(self, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patches = nn.Conv2d(3, width, 8, 8)
        self.position = nn.Parameter(torch.randn(1, 16, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 2, 64, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patches(x).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(1))


MODELS = {"cnn": (cnn, 3e-3), "vit": (ViT, 1e-3)}


def train(store, steps: int = 8, model: str = "cnn", **options):
    x, y = cifar_shaped()
    make, lr = MODELS[model]
    model, loss_fn = make(), nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    tracker = Tracker(model, loss_fn, (x, y), store, rule="auto", **options)
    batches = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=batches)
        loss = loss_fn(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        with tracker.step():
            optimizer.step()
    return tracker.close(), (model, loss_fn, (x, y))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_auto_stays_within_the_budget_it_reports(tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)  # nothing to warn about
        summary, (model, loss_fn, data) = train(tmp_path / "run", model=name, store_trajectory=True)
    assert summary.budget_used <= summary.budget and summary.unconverged_steps == 0
    run = open_run(tmp_path / "run")
    backend = lca_core.create_backend(model, loss_fn, data)
    for t in range(2):  # per layer, against a 64-panel Simpson oracle of the same steps
        oracle = lca_core.allocate(
            backend, run.theta(t), run.theta(t + 1), tol=1e-12, max_panels=64
        )
        error = np.abs(run.layer_lca[t] - oracle.result.layer_lca)
        assert error.sum() <= 1e-3 and error.max() <= 0.05 * np.abs(oracle.result.layer_lca).max()


def test_the_residual_alone_lets_the_cnn_spend_several_budgets_unflagged(monkeypatch):
    monkeypatch.setattr(lca_core.allocator, "BUDGET_SHARE", 0.0)
    with pytest.warns(AccuracyWarning, match="over its 1 % budget"):
        blind, _ = train(None)
    assert blind.budget_used > 2 * blind.budget and blind.unconverged_steps == 0
