"""What ``optimizer=`` adds to a tracked step: the split's seconds ÷ the step's, PyTorch.

The same model, data and batches trained with and without the split, interleaved in one
process (each repeat a fresh model, tracker and optimizer); the split reads the
optimizer's state on the host and makes no gradient pass, so its cost is K-long host
arithmetic per part.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import torch
from bench_torch import mlp, tracked_step_seconds
from common import REPEATS, cases
from lca_torch import Tracker
from torch import nn

OPTIMIZERS = {
    "SGD momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
}


def tracked_seconds(sizes, x, y, steps: int, optimizer: str, split: bool) -> float:
    """Median wall seconds of a tracked step (Simpson, the whole set)."""
    torch.manual_seed(0)
    model = mlp(sizes)
    opt = OPTIMIZERS[optimizer](model.parameters())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (xt, yt), optimizer=opt if split else None)
    seconds = tracked_step_seconds(model, opt, tracker, xt, yt, steps)
    return statistics.median(seconds[1:])  # the first step evaluates θ_0 too


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 4 if quick else 21
    rows = []
    for name, sizes, x, y in cases(quick):
        params = sum(a * b + b for a, b in itertools.pairwise(sizes))
        for optimizer in OPTIMIZERS:
            plain, split = [], []
            for _ in range(REPEATS):  # interleaved: the machine's drift hits both alike
                plain.append(tracked_seconds(sizes, x, y, steps, optimizer, False))
                split.append(tracked_seconds(sizes, x, y, steps, optimizer, True))
            ratios = np.array(split) / np.array(plain)
            rows.append(
                [
                    f"{name} (K={params})",
                    optimizer,
                    f"{1e3 * statistics.median(plain):.1f}",
                    f"{1e3 * statistics.median(split):.1f}",
                    f"{statistics.median(ratios):.3f}",
                    f"{ratios.min():.3f}–{ratios.max():.3f}",
                ]
            )
    notes = (
        "Tracked step = `with tracker.step(): optimizer.step()` (the optimizer's own step "
        f"included), Simpson on the whole set; medians of {steps - 1} steps, {REPEATS} "
        "interleaved repeats; ratio = with `optimizer=` ÷ without, its range over the "
        "repeats. Gradient passes are the same with and without (tested)."
    )
    return (
        "The optimizer split's cost per tracked step (PyTorch, CPU)",
        ["case", "optimizer", "step ms", "step ms with optimizer=", "ratio", "ratio range"],
        rows,
        notes,
    )
