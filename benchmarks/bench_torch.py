"""LCA time per step ÷ (2 × one hand-written full-set gradient pass), PyTorch.

Both are timed in the same process on the same model and evaluation data; Simpson needs
two new gradient passes per step (the endpoint is reused), so 1.0 is the floor.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from common import HEADER, ratio_rows, timings
from lca_torch import Tracker
from torch import nn


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def hand_written_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> None:
    """What a user would write: mean loss over the set, backward chunk by chunk."""
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x), chunk):
        xb, yb = x[i : i + chunk], y[i : i + chunk]
        (loss_fn(model(xb), yb) * (len(xb) / len(x))).backward()


def interleaved(
    model: nn.Module,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    x: Any,
    y: torch.Tensor,
    tracker: Tracker,
    opt: torch.optim.Optimizer,
    *,
    chunk: int,
    batch: int,
    steps: int,
    sync: Callable[[], None] = lambda: None,
) -> tuple[list[float], list[float], list[int]]:
    """Per step: one hand-written pass on a copy of the model (timed), a training step on
    ``batch`` random examples, and the tracker's allocation of it (timed), so that both
    timings see the same machine. Returns the pass and LCA seconds and the panels."""
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    passes, lca, panels = [], [], []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        hand_written_pass(reference, x, y, chunk, loss_fn)
        sync()
        passes.append(time.perf_counter() - start)
        idx = torch.randint(0, len(y), (batch,), generator=gen)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        start = time.perf_counter()
        result = tracker.end()
        tracker.begin()
        lca.append(time.perf_counter() - start)
        panels.append(result.panels)
    return passes, lca, panels


def measure(
    sizes: tuple[int, ...], x_np: np.ndarray, y_np: np.ndarray, steps: int, chunk: int = 4096
) -> dict[str, float]:
    """LCA steps interleaved with hand-written passes on the digits-style MLP."""
    torch.manual_seed(0)
    model = mlp(sizes)
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), batch_size=chunk)
    tracker.begin()
    passes, lca, panels = interleaved(
        model, nn.functional.cross_entropy, x, y, tracker, opt, chunk=chunk, batch=250, steps=steps
    )
    tracker.close()
    return timings(passes, lca, panels, warmup=0)


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 10 if quick else 40
    rows = ratio_rows(measure, quick, steps)
    notes = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
        f"median of {steps} steps. 'ratio' = median LCA step ÷ (mean passes per step × "
        "median pass), goal ≤ 1.10."
    )
    return (
        "PyTorch: LCA step vs two hand-written gradient passes",
        HEADER,
        rows,
        notes,
    )
