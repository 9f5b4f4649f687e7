"""The Hugging Face Trainer callback on a tiny GPT-2 built from a config (no download)."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from lca_torch.hf import LCACallback
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.trainer_utils import set_seed

from lca_core import open_run
from tests.dashboards import (
    as_float32,
    assert_same,
    expected,
    mlflow_metrics,
    tensorboard_scalars,
    wandb_history,
)


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=48, n_positions=16, n_embd=24, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config)


def token_examples(n, seed):
    rng = np.random.default_rng(seed)
    # a learnable pattern: each sequence counts up from a random start
    starts = rng.integers(0, 32, n)
    ids = (starts[:, None] + np.arange(16)[None]) % 48
    return [{"input_ids": torch.tensor(r), "labels": torch.tensor(r)} for r in ids]


def train(tmp_path, callbacks, accumulate=1, report_to=()):
    set_seed(0)
    model = tiny_gpt2()
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=accumulate,
        max_steps=6,
        learning_rate=3e-3,
        logging_steps=1,
        report_to=list(report_to),
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=token_examples(96, 1), callbacks=callbacks
    )
    trainer.train()
    return model, trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_trainer_train_with_the_callback_adds_up(tmp_path, accumulate):
    callback = LCACallback(token_examples(40, 2), tmp_path / "run", progress=False)
    model, trainer = train(tmp_path, [callback], accumulate)
    run = open_run(tmp_path / "run")
    assert run.steps == 6  # one optimizer step = one LCA step, whatever the accumulation
    assert callback.tracker.expected_steps == trainer.state.max_steps == 6
    summary = callback.summary()
    assert summary.steps == 6 and summary.loss_change < 0  # the pattern is being learned
    assert summary.budget_used < 0.01
    assert np.all(np.abs(run.residuals) <= 1e-3)
    # L is the model's own loss on the evaluation examples (collated by the trainer)
    with torch.no_grad():
        model.eval()
        batch = {k: torch.stack([e[k] for e in token_examples(40, 2)]) for k in ("input_ids",)}
        final = model(**batch, labels=batch["input_ids"]).loss.item()
    assert run.losses[-1] == pytest.approx(final, rel=1e-5)
    logged = [h for h in trainer.state.log_history if "lca/residual" in h]
    assert [h["step"] for h in logged] == list(range(1, 7))
    assert_same(
        {t: [(h["step"], h[t]) for h in logged] for t in logged[0] if t.startswith("lca/")},
        expected(tmp_path / "run"),
    )


def test_what_report_to_names_gets_every_step(tmp_path, monkeypatch):
    import mlflow
    import wandb

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # the trainer keeps a URI set before (by an earlier test)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = LCACallback(token_examples(40, 2), tmp_path / "run", log_every=2)
    train(tmp_path, [callback], report_to=["tensorboard", "mlflow", "wandb"])
    run_dir = wandb.run.settings.sync_dir
    wandb.finish()  # the trainer leaves its run open
    want = {t: v[1::2] for t, v in expected(tmp_path / "run").items()}  # steps 2, 4, 6
    assert_same(tensorboard_scalars(tmp_path / "hf" / "runs" / "lca"), as_float32(want))
    client = mlflow.MlflowClient(uri)
    (hf_run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert_same(mlflow_metrics(client, hf_run.info.run_id), want)
    assert_same(wandb_history(run_dir), want)


def test_the_callback_does_not_change_training(tmp_path):
    with_lca, _ = train(tmp_path / "a", [LCACallback(token_examples(40, 2), progress=False)])
    without, _ = train(tmp_path / "b", [])
    for (name, a), (_, b) in zip(
        with_lca.state_dict().items(), without.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_optimizer_true_splits_by_the_trainers_adamw(tmp_path):
    import warnings

    from lca_core.errors import AccuracyWarning

    callback = LCACallback(token_examples(40, 2), tmp_path / "run", optimizer=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)  # clipped (max_grad_norm=1): the rule holds
        train(tmp_path, [callback])
    run = open_run(tmp_path / "run")
    assert run.config["optimizer"] == "torch.optim.AdamW" and run.steps == 6
    parts = run.part_layer_lca
    np.testing.assert_allclose(parts.sum(axis=1), run.layer_lca, atol=1e-12)
    assert np.abs(parts[1:, 1]).sum() > 0 and not parts[0, 1].any()  # no momentum at step 0
