"""LCA in the dashboards of PyTorch users: torch's and tensorboardX's SummaryWriter, the
Lightning loggers, the Hugging Face Trainer's report_to, and the demo crying no wolf —
each read back with the dashboard's own library."""

import csv
import logging

import lightning as L
import numpy as np
import pytest
import torch
from lca_torch import Tracker
from lca_torch.lightning import LCACallback
from torch import nn

from lca_core import open_run
from lca_core.dashboards import Alerts
from lca_core.tools.cli import main
from tests.dashboards import (
    as_float32,
    assert_same,
    expected,
    mlflow_metrics,
    tensorboard_scalars,
    tensorboard_texts,
    wandb_history,
)
from tests.torch.conftest import mlp, train
from tests.torch.test_lightning import Module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("kind", ["torch", "tensorboardX"])
def test_a_summary_writer_gets_every_step_and_the_alerts(digits, tmp_path, kind):
    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    x, y, xv, yv = digits
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    model = mlp()
    tracker = Tracker(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        tmp_path / "run",
        val_data=(xv, yv),
        eval_subset=0.5,
        log_to=writer,
        alerts=Alerts(hurting_steps=1),
    )
    train(model, tracker, x, y, steps=8, lr=0.5)  # a learning rate high enough to hurt
    tracker.close()
    writer.close()
    assert_same(tensorboard_scalars(tmp_path / "tb"), as_float32(expected(tmp_path / "run")))
    hurt = np.flatnonzero((open_run(tmp_path / "run").layer_lca > 0).any(axis=1))
    assert hurt.size  # the alerts are there to see, as text events
    assert any("raised the loss" in text for text in tensorboard_texts(tmp_path / "tb"))


def test_every_lightning_logger_gets_every_step_and_callbacks_the_epochs(
    digits, tmp_path, monkeypatch
):
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
    from mlflow import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    x, y, _, _ = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = [
        TensorBoardLogger(tmp_path / "tb", name="", version=""),
        CSVLogger(tmp_path / "csv", name="", version=""),
        MLFlowLogger(tracking_uri=uri),
        WandbLogger(save_dir=str(tmp_path), offline=True),
    ]
    callback = LCACallback((x, y), tmp_path / "run", loss_fn=nn.CrossEntropyLoss(), optimizer=True)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=loggers,
        log_every_n_steps=50,  # Lightning's thinning does not apply: every step is logged
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Module(), loader)
    for logger in loggers:
        logger.finalize("success")
    loggers[3].experiment.finish()
    want = expected(tmp_path / "run")
    assert want["lca/layer/net.fc1"][-1][0] == trainer.global_step == 12
    assert "lca/momentum/layer/net.fc3" in want
    assert_same(tensorboard_scalars(tmp_path / "tb"), as_float32(want))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lca/sum_lca")]
    got = {t: [(int(r["step"]), float(r[t])) for r in rows] for t in want}
    assert_same(got, want, rtol=1e-15)
    assert_same(mlflow_metrics(MlflowClient(uri), loggers[2].run_id), want)
    assert_same(wandb_history(tmp_path, step="trainer/global_step"), want)
    # the last epoch's sums, for callbacks such as EarlyStopping
    run = open_run(tmp_path / "run")
    assert float(trainer.callback_metrics["lca/layer/net.fc2"]) == pytest.approx(
        run.layer_lca[6:, 1].sum(), rel=1e-6
    )


def test_the_demo_cries_no_wolf(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lca"):
        for optimizer in ("sgd", "adam"):
            out = str(tmp_path / optimizer)
            assert main(["demo", "--out", out, "--optimizer", optimizer, "--frames", "2"]) == 0
    assert not [r for r in caplog.records if "alert" in r.getMessage()]
