"""What logging to a dashboard adds to a tracked step (``log_to=``), PyTorch.

The demo's setting (Simpson, the whole set, a validation set, ``optimizer=`` on: 5 + 12
numbers a step, 3 layers) tracked with and without each dashboard, interleaved in one
process, on the digits MLP (a 4 ms step: the hardest case) every step and every 10th, and
on the MNIST-sized MLP every step. Two measures: the tracked step's wall time against the
same step logging nowhere, and the seconds spent inside the dashboard call itself
(``Dashboard.step``), a direct reading that the machine's noise between two steps does
not blur.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bench_torch import mlp, tracked_step_seconds
from common import REPEATS, cases
from lca_torch import Tracker
from torch import nn

from lca_core.dashboards import Dashboard


def _torch_writer(tmp: str) -> tuple[Any, Callable[[], None]]:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=os.path.join(tmp, "tb"))
    return writer, writer.close


def _mlflow(tmp: str) -> tuple[Any, Callable[[], None]]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")
    mlflow.start_run()
    return mlflow, mlflow.end_run


def _wandb(tmp: str) -> tuple[Any, Callable[[], None]]:
    import wandb

    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    run = wandb.init(project="lca-bench", dir=tmp)
    return run, run.finish


DASHBOARDS: dict[str, Callable[[str], tuple[Any, Callable[[], None]]] | None] = {
    "none": None,
    "a function": lambda tmp: ((lambda step, metrics: None), lambda: None),
    "torch SummaryWriter": _torch_writer,
    "MLflow (sqlite, its active run)": _mlflow,
    "W&B (offline)": _wandb,
}


def tracked(sizes, x, y, steps: int, dashboard: str, log_every: int) -> tuple[float, float]:
    """Median wall seconds of a tracked step, and the mean of its dashboard call (the
    mean: with ``log_every`` most calls log nothing, and the cost is their average)."""
    torch.manual_seed(0)
    model = mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with tempfile.TemporaryDirectory() as tmp:
        make = DASHBOARDS[dashboard]
        target, finish = make(tmp) if make else (None, lambda: None)
        n_val = len(xt) // 6
        tracker = Tracker(
            model,
            nn.CrossEntropyLoss(),
            (xt[n_val:], yt[n_val:]),
            val_data=(xt[:n_val], yt[:n_val]),
            optimizer=opt,
            log_to=target,
            log_every=log_every,
        )
        inside: list[float] = []
        timed = Dashboard.step

        def step(self, *args, **kwargs):  # the dashboard call's own seconds
            start = time.perf_counter()
            out = timed(self, *args, **kwargs)
            inside.append(time.perf_counter() - start)
            return out

        tracker.dashboard.step = step.__get__(tracker.dashboard)
        seconds = tracked_step_seconds(model, opt, tracker, xt, yt, steps)
        finish()
    return statistics.median(seconds[1:]), statistics.mean(inside[1:])


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    (digits, small, xs, ys), (mnist, large, xl, yl) = cases(quick)
    settings = [
        (digits, small, xs, ys, 6 if quick else 41, 1),
        (digits, small, xs, ys, 6 if quick else 41, 10),
        (mnist, large, xl, yl, 4 if quick else 11, 1),
    ]
    rows = []
    for name, sizes, x, y, steps, log_every in settings:
        results: dict[str, list[tuple[float, float]]] = {d: [] for d in DASHBOARDS}
        for _ in range(REPEATS):  # interleaved: the machine's drift hits every one alike
            for dashboard in DASHBOARDS:
                results[dashboard].append(tracked(sizes, x, y, steps, dashboard, log_every))
        base = np.array([s for s, _ in results["none"]])
        for dashboard, measured in results.items():
            step = np.array([s for s, _ in measured])
            inside = np.array([i for _, i in measured])
            rows.append(
                [
                    name,
                    str(log_every),
                    dashboard,
                    f"{1e3 * np.median(step):.2f}",
                    f"{np.median(step / base):.3f}",
                    f"{1e3 * np.median(inside):.3f}",
                    f"{100 * np.median(inside / base):.2f} %",
                ]
            )
    notes = (
        "Tracked step = `with tracker.step(): optimizer.step()`, Simpson, the whole set and "
        "a validation set, `optimizer=` on (17 numbers a logged step); medians over the "
        f"steps of {REPEATS} interleaved repeats. 'dashboard ms' is the mean time inside "
        "the dashboard call per tracked step (naming the numbers, the alerts, the writer's "
        "call; with log_every=10, one step in ten logs); 'added' is that over the median "
        "step logging nowhere. MLflow and W&B are asynchronous (MLflow's `synchronous=False`, "
        "flushed at close; W&B's own queue), torch's writer queues too; their call is "
        "still the library's own Python work per number."
    )
    return (
        "What logging to a dashboard adds to an LCA step (PyTorch, CPU)",
        ["case", "log_every", "dashboard", "step ms", "ratio to none", "dashboard ms", "added"],
        rows,
        notes,
    )
