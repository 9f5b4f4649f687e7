"""LCA time per step ÷ (2 × one hand-written full-set gradient pass), PyTorch.

Both are timed in the same process on the same model and evaluation data; Simpson needs
two new gradient passes per step (the endpoint is reused), so 1.0 is the floor.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import OrderedDict

import torch
from lca_torch import Tracker
from lca_torch.demo import load_digits_split, mnist_fc
from torch import nn


def mlp_784() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(784, 100),
            relu1=nn.ReLU(),
            fc2=nn.Linear(100, 50),
            relu2=nn.ReLU(),
            fc3=nn.Linear(50, 10),
        )
    )


def hand_written_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int) -> None:
    """What a user would write: mean loss over the set, backward chunk by chunk."""
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x), chunk):
        xb, yb = x[i : i + chunk], y[i : i + chunk]
        (nn.functional.cross_entropy(model(xb), yb) * (len(xb) / len(x))).backward()


def measure(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, chunk: int = 4096
) -> dict[str, float]:
    """Interleaves one hand-written pass with each LCA step so both see the same machine."""
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), batch_size=chunk)
    tracker.begin()
    passes, lca, panels = [], [], []
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        start = time.perf_counter()
        hand_written_pass(reference, x, y, chunk)
        passes.append(time.perf_counter() - start)
        idx = torch.randint(0, len(x), (250,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        start = time.perf_counter()
        result = tracker.end()
        tracker.begin()
        lca.append(time.perf_counter() - start)
        panels.append(result.panels)
    tracker.close()
    return {
        "pass": statistics.median(passes),
        "lca": statistics.median(lca),
        "lca_mean": statistics.mean(lca),
        "pass_mean": statistics.mean(passes),
        "panels": statistics.mean(panels),
    }


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    torch.manual_seed(0)
    steps = 10 if quick else 40
    x, y, _, _ = load_digits_split(0)
    cases = [("digits MLP 64-100-50-10, N=1500", mnist_fc(), x, y)]
    n = 12_000 if quick else 60_000
    gx = torch.randn(n, 784)
    gy = (gx[:, :10].argmax(1) + (gx[:, 10] > 1).long()) % 10
    cases.append((f"MLP 784-100-50-10, N={n}", mlp_784(), gx, gy))
    rows = []
    for name, model, xs, ys in cases:
        m = measure(model, xs, ys, steps)
        rows.append(
            [
                name,
                f"{1e3 * m['pass']:.2f}",
                f"{1e3 * m['lca']:.2f}",
                f"{m['panels']:.2f}",
                f"{m['lca'] / (2 * m['pass']):.3f}",
                f"{m['lca_mean'] / (m['panels'] * m['pass_mean']):.3f}",
            ]
        )
    notes = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
        f"median of {steps} steps. 'ratio' = median LCA step ÷ (2 × median pass), goal "
        "≤ 1.10; 'ratio per pass' divides the mean step by its mean passes "
        "(panels), which factors out adaptive refinement."
    )
    return (
        "PyTorch: LCA step vs two hand-written gradient passes",
        ["case", "pass ms", "LCA step ms", "mean panels", "ratio", "ratio per pass"],
        rows,
        notes,
    )
