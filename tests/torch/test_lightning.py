"""The Lightning callback (the tox `torch` env installs Lightning, so this runs in CI)."""

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
import lightning as L
from lca_torch.lightning import LCACallback

from lca_core import open_run
from tests.checks import assert_every_step_within_tol
from tests.torch.conftest import mlp


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_one_optimizer_step_is_one_lca_step(digits, tmp_path, accumulate):
    x, y, _, _ = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    callback = LCACallback((x, y), tmp_path / "run", loss_fn=nn.CrossEntropyLoss())
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[callback],
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Module(), loader)
    run = open_run(tmp_path / "run")
    assert run.steps == trainer.global_step == len(loader) // accumulate
    assert callback.tracker.expected_steps == trainer.estimated_stepping_batches
    assert callback.summary().budget_used < 0.01
    assert run.layers == ["net.fc1", "net.fc2", "net.fc3"]
    assert_every_step_within_tol(run)
    assert float(trainer.callback_metrics["lca/sum_lca"]) == pytest.approx(
        run.layer_lca.sum(), rel=1e-6
    )  # the epoch's sums (one epoch)


def test_the_0_1_argument_order_still_works_with_a_warning(digits):
    x, y, _, _ = digits
    loss = nn.CrossEntropyLoss()
    with pytest.warns(DeprecationWarning, match="LCACallback\\(data, store, loss_fn=loss_fn\\)"):
        callback = LCACallback(loss, (x, y), "runs/old")
    assert callback.loss_fn is loss and callback.data[0] is x
    assert callback.opts["store"] == "runs/old"
    import lca_torch

    assert lca_torch.LCACallback is LCACallback  # still importable where 0.1 had it


class AdamWModule(Module):
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)


def test_optimizer_true_splits_by_the_trainers_optimizer(digits, tmp_path):
    import warnings

    import numpy as np

    from lca_core.errors import AccuracyWarning

    x, y, _, _ = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100)
    callback = LCACallback((x, y), tmp_path / "run", loss_fn=nn.CrossEntropyLoss(), optimizer=True)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[callback],
        gradient_clip_val=0.5,  # clipped after the callback's begin: the gradient part sees it
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        trainer.fit(AdamWModule(), loader)
    run = open_run(tmp_path / "run")
    assert run.config["optimizer"] == "torch.optim.AdamW" and run.steps == len(loader)
    parts = run.part_layer_lca
    np.testing.assert_allclose(parts.sum(axis=1), run.layer_lca, atol=1e-12)
    assert np.abs(parts[1:, 1]).sum() > 0 and np.abs(parts[:, 2]).sum() > 0
