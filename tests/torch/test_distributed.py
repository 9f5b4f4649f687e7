"""torch.distributed: a 2-process DDP job over gloo (CPU) gives the run one process gives;
a rank that dies mid-step stops the job with an lca error and leaves a whole run."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from lca_torch import TorchBackend, Tracker
from torch import nn

from lca_core import DistributedError, open_run, replay

STEPS, N, BATCH = 6, 300, 32  # 10 evaluation chunks: 5 per rank


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    return torch.from_numpy(x), torch.from_numpy(y)


def _model() -> nn.Module:
    """With BatchNorm: per-chunk batch statistics, so the chunks must be one process's."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(8, 16), bn=nn.BatchNorm1d(16), relu=nn.ReLU(), fc2=nn.Linear(16, 4)
        )
    )


def _worker(
    rank: int, port: int, store: str, die_at: int | None, stream: bool, resume: bool
) -> None:
    """One process of the job: DDP training with a Tracker, as a user writes it (resumed:
    from the model rank 0 saved at the end of the last job)."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=30),
    )
    report: dict = {"rank": rank}
    try:
        module = _model()
        if resume:
            module.load_state_dict(torch.load(f"{store}.pt"))
        model = nn.parallel.DistributedDataParallel(module)
        x, y = _data()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        # every rank passes the whole set; lca shards it (streamed: read from the loader)
        data = (x, y)
        if stream:
            data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), BATCH)
        tracker = Tracker(
            model,
            nn.CrossEntropyLoss(),
            data,
            store,
            batch_size=BATCH,
            resident_bytes=1 if stream else None,
            per_class=not stream,
            store_params=True,
            store_trajectory=True,
            progress=False,
            resume=resume,
        )
        report["unwrapped"] = tracker.backend.model is model.module  # DDP's hooks untouched
        generator = torch.Generator().manual_seed(rank)  # each rank its own batches
        for step in range(STEPS):
            idx = torch.randint(0, N, (BATCH,), generator=generator)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            with tracker.step():
                opt.step()
                if step == die_at and rank == 1:
                    os._exit(3)  # a crash inside the step: rank 0 is evaluating
        summary = tracker.close().to_dict()
        report |= {"summary": {k: v for k, v in summary.items() if "seconds" not in k}}
        report["passes"] = tracker.gradient_passes
        report["last_step"] = tracker.last.step if tracker.last is not None else None
        if rank == 0:
            torch.save(module.state_dict(), f"{store}.pt")
    except DistributedError as exc:
        report["error"] = str(exc)
    finally:
        Path(f"{store}.rank{rank}.json").write_text(json.dumps(report, default=float))
        dist.destroy_process_group()


def _job(
    store: Path, die_at: int | None = None, stream: bool = False, resume: bool = False
) -> list[int | None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(r, port, str(store), die_at, stream, resume))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    return [p.exitcode for p in procs]


def _report(store: Path, rank: int) -> dict:
    return json.loads(Path(f"{store}.rank{rank}.json").read_text())


@pytest.mark.parametrize("stream", [False, True], ids=["held", "streamed"])
def test_two_processes_give_the_run_one_process_gives(tmp_path, stream):
    store = tmp_path / "ddp"
    assert _job(store, stream=stream) == [0, 0]
    ranks = [_report(store, r) for r in (0, 1)]
    assert ranks[0]["summary"] == ranks[1]["summary"]  # every rank: the same allocation
    assert ranks[0]["passes"] == ranks[1]["passes"]
    assert ranks[0]["unwrapped"] and ranks[1]["unwrapped"]
    run = open_run(store)  # rank 0 wrote it, alone
    assert run.steps == STEPS and run.metadata["policy"]["processes"] == 2
    assert run.metadata["policy"]["streamed"] == stream

    # one process, the same trajectory: the reference
    x, y = _data()
    backend = TorchBackend(_model(), nn.CrossEntropyLoss(), (x, y), batch_size=BATCH)
    out = tmp_path / "one"
    replay(store, backend, out=out, per_class=not stream, store_params=True, progress=False)
    one = open_run(out)
    np.testing.assert_allclose(run.losses, one.losses, rtol=1e-12)
    # the job's arithmetic on its tensors (float32 vectors, float64 sums), the replay's on
    # the host in float64: ~1e-7 of the largest measured (docs/concepts.md)
    atol = 1e-6 * np.abs(one.layer_lca).max()
    np.testing.assert_allclose(run.layer_lca, one.layer_lca, rtol=0, atol=atol)
    if not stream:
        np.testing.assert_allclose(
            run.array("class_layer_lca"), one.array("class_layer_lca"), rtol=0, atol=atol
        )
    params = one.array("param_lca")
    np.testing.assert_allclose(
        run.array("param_lca"), params, rtol=0, atol=1e-6 * np.abs(params).max()
    )
    np.testing.assert_array_equal(run.panels, one.panels)
    # float32 vectors with float64 sums against float64 throughout (docs/concepts.md)
    assert ranks[0]["summary"]["sum_lca"] == pytest.approx(one.summary().sum_lca, rel=1e-6)


def test_a_rank_dying_stops_the_job_with_a_whole_run(tmp_path):
    store = tmp_path / "ddp"
    codes = _job(store, die_at=3)
    assert codes[1] == 3
    error = _report(store, 0).get("error", "")
    assert "Another process of the job has stopped" in error, error
    run = open_run(store)  # validated on open: not corrupt
    assert run.steps == 3  # every committed step kept, the interrupted one not
    assert np.isfinite(run.layer_lca).all()


def test_a_resumed_job_continues_the_run_in_every_process(tmp_path):
    """Only rank 0 opens the store; the other ranks take the resumed run's state from it,
    so every rank numbers the steps alike and summarises the whole run."""
    store = tmp_path / "ddp"
    assert _job(store) == [0, 0]
    assert _job(store, resume=True) == [0, 0]
    ranks = [_report(store, r) for r in (0, 1)]
    assert ranks[0]["summary"] == ranks[1]["summary"]
    assert ranks[0]["last_step"] == ranks[1]["last_step"] == 2 * STEPS - 1
    run = open_run(store)
    whole = run.summary()
    assert run.steps == 2 * STEPS
    assert ranks[1]["summary"]["sum_lca"] == pytest.approx(whole.sum_lca, rel=1e-12)
    assert ranks[1]["summary"]["layers"] == pytest.approx(whole.layers, rel=1e-12)


def test_without_a_process_group_one_process_evaluates_everything_and_writes():
    x, y = _data()
    backend = TorchBackend(_model(), nn.CrossEntropyLoss(), (x, y), batch_size=BATCH)
    assert backend.writes and backend.policy()["processes"] == 1
    assert backend._shards.mine(backend.sets["train"]) == backend.sets["train"]


def test_lightning_ddp_writes_one_run_equal_to_one_process(tmp_path):
    """Lightning's DDP strategy (2 CPU processes): rank 0 writes, the same LCA as one process."""
    L = pytest.importorskip("lightning")
    from lca_torch.lightning import LCACallback

    from tests.torch.lightning_ddp import Classifier

    x, y = _data()
    callback = LCACallback(
        (x, y), tmp_path / "lit", batch_size=BATCH, store_trajectory=True, progress=False
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=4,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer.fit(Classifier(), loader)
    run = open_run(tmp_path / "lit")
    assert run.steps == 4 and run.metadata["policy"]["processes"] == 2
    backend = TorchBackend(Classifier(), nn.CrossEntropyLoss(), (x, y), batch_size=BATCH)
    replay(tmp_path / "lit", backend, out=tmp_path / "one", progress=False)
    one = open_run(tmp_path / "one")
    # float32 tolerance: Lightning gives each process its own share of the CPU threads, and
    # float32 matrix products round differently with another thread count
    np.testing.assert_allclose(run.losses, one.losses, rtol=1e-6)
    np.testing.assert_allclose(run.layer_lca, one.layer_lca, rtol=1e-4, atol=1e-7)
