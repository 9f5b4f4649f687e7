"""LCA left on: whole-training wall time tracked ÷ untracked, every step, PyTorch on CPU.

Each case trains the same model from the same seed on the same batches (SGD momentum 0.9,
batch 128) untracked and under each mode, interleaved round by round, so the machine's
drift hits every mode alike; the ratio of a round is its tracked time ÷ its untracked
time. Tracking does not change training (the final parameters of every mode are checked
equal), so every mode allocates the same trajectory, and the subset modes are compared,
step by step and layer by layer, with the exact full-set allocation of it (Simpson on the
whole set, converged within its budget).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lca_torch import Tracker
from scipy import stats
from torch import nn

BATCH = 128


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor((x / 16).astype(np.float32)), torch.tensor(y)


def cifar_shaped(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n 32×32×3 images: a class template each, under noise (learnable in a few steps)."""
    gen = torch.Generator().manual_seed(0)
    templates = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return templates[y] * 0.5 + torch.randn(n, 3, 32, 32, generator=gen), y


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10)
    )


def cnn(batchnorm: bool) -> nn.Module:
    """Three conv layers (16/32/64 channels, each pooled) and a linear head: ~34 k
    parameters, with BatchNorm after each conv or without."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 16), (16, 32), (32, 64)):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


@dataclass(frozen=True)
class Case:
    name: str
    make: Any
    data: Any
    steps: int
    backend: dict[str, Any]
    rounds: int = 3


def cases(quick: bool) -> list[Case]:
    n = 1024 if quick else 4096
    epoch = n // BATCH
    # the CNN's set evaluated in chunks of 128: on this CPU its fastest (a 4096-chunk pass
    # takes 2.5× as long)
    chunks = {"batch_size": BATCH}
    return [
        Case("digits MLP 64-100-50-10, N=1797", mlp, digits(), 10 if quick else 28, {}),
        Case(
            f"CIFAR-shaped CNN, N={n}, {3 * epoch} steps",
            lambda: cnn(False),
            cifar_shaped(n),
            3 * epoch,
            chunks,
            1 if quick else 3,
        ),
        Case(
            f"CIFAR-shaped CNN + BatchNorm (running), N={n}, {epoch} steps",
            lambda: cnn(True),
            cifar_shaped(n),
            epoch,
            {**chunks, "bn_policy": "running"},
            1,
        ),
    ]


#: the modes, by name: the tracker's options (None: untracked)
MODES: dict[str, dict[str, Any] | None] = {
    "untracked": None,
    "simpson, full set": {"rule": "simpson"},
    "auto, full set": {"rule": "auto"},
    "fixed subset 10 %": {"rule": "auto", "eval_subset": 0.1},
    "resampled n=128 (shared)": {"eval_subset": BATCH, "resample": True},
    "resampled n=64 (shared)": {"eval_subset": BATCH // 2, "resample": True},
    "resampled n=128 (paired)": {"eval_subset": BATCH, "resample": "paired", "rule": "auto"},
}


def train(case: Case, options: dict[str, Any] | None) -> dict[str, Any]:
    """One training run of the case; its wall time, final θ and per-step allocations."""
    torch.manual_seed(0)
    model = case.make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = case.data
    gen = torch.Generator().manual_seed(1)
    order = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(8)])
    layers, stderr, cov = [], [], []
    started = time.perf_counter()
    tracker = None
    if options is not None:
        tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), **case.backend, **options)
    for step in range(case.steps):
        idx = order[step * BATCH : (step + 1) * BATCH]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if tracker is None:
            opt.step()
            continue
        with tracker.step():
            opt.step()
        last = tracker.last
        assert last is not None
        layers.append(last.layer_lca)
        stderr.append(last.layer_lca_stderr)
        cov.append(last.layer_lca_cov_prev)
    summary = tracker.close() if tracker is not None else None
    seconds = time.perf_counter() - started
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    return {
        "seconds": seconds,
        "theta": theta,
        "layers": np.array(layers),
        "stderr": None if not stderr or stderr[0] is None else np.array(stderr),
        "summary": summary,
        "groups": None if options is None or "eval_subset" not in options else 16,
    }


def _subset_columns(run: dict[str, Any], exact: np.ndarray) -> list[str]:
    """Coverage of the 95 % t-intervals, the mean standardized error (± its standard
    error over the steps and layers), and the run's check."""
    if run["stderr"] is None:
        return ["—", "—", "—"]
    z = (run["layers"] - exact) / run["stderr"]
    t = stats.t.ppf(0.975, run["groups"] - 1)
    coverage = f"{100 * np.mean(np.abs(z) <= t):.0f} %"
    bias = f"{z.mean():+.2f} ± {z.std(ddof=1) / np.sqrt(z.size):.2f}"
    check = run["summary"].run_check
    verdict = "—"
    if check is not None:
        verdict = f"{check.z:+.1f} SE, {'consistent' if check.consistent else 'INCONSISTENT'}"
    return [coverage, bias, verdict]


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    rows = []
    for case in cases(quick):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in MODES}
        for _ in range(1 if quick else case.rounds):  # interleaved: each round, every mode
            for name, options in MODES.items():
                runs[name].append(train(case, options))
        plain = [r["seconds"] for r in runs["untracked"]]
        exact = runs["simpson, full set"][0]["layers"]
        for name, done in runs.items():
            for r in done:  # tracking never changes training: one trajectory for all
                np.testing.assert_array_equal(r["theta"], runs["untracked"][0]["theta"])
            ratios = [r["seconds"] / p for r, p in zip(done, plain, strict=True)]
            summary = done[0]["summary"]
            passes = "—" if summary is None else f"{summary.gradient_passes / case.steps:.2f}"
            budget = "—"
            if summary is not None and summary.run_check is None:
                budget = f"{100 * summary.budget_used:.2f} %"
            rows.append(
                [
                    case.name,
                    name,
                    f"{statistics.median(r['seconds'] for r in done):.2f}",
                    f"{statistics.median(ratios):.2f}",
                    f"{min(ratios):.2f}–{max(ratios):.2f}",
                    passes,
                    budget,
                    *_subset_columns(done[0], exact),
                ]
            )
    notes = (
        "Whole-training wall seconds (median of the interleaved rounds: 3, 1 for the "
        "BatchNorm CNN, whose full-set modes take minutes), ratio = "
        "tracked ÷ untracked of the same round, and its range. Every mode allocates every "
        "step. passes/step: gradient passes per step over the set each mode evaluates "
        "(a subset's pass is over its examples; the resampled modes add two full-set "
        "passes per run for the run's check). budget: |Σ r| / |ΔL| for the modes judged "
        "step by step. coverage: (step, layer) pairs whose 95 % t-interval (15 degrees of "
        "freedom) holds the exact full-set value (Simpson on the whole set, same "
        "trajectory); mean z: the mean standardized error (est − exact) / se, ± its "
        "standard error over the pairs (steps' errors are treated as independent: the "
        "shared design's adjacent steps covary, so the ± is slightly low for it); run "
        "check: (Σ LCA + Σ drift − ΔL of the full set) in standard errors. The BatchNorm CNN is "
        "evaluated with its running statistics (bn_policy='running'): in batch mode a "
        "subset group of 8 examples would be normalised over itself, another function "
        "than the full set's 4096-example chunks."
    )
    header = [
        "case",
        "mode",
        "seconds",
        "ratio",
        "ratio range",
        "passes/step",
        "budget",
        "coverage",
        "mean z",
        "run check",
    ]
    return "LCA left on: every step, tracked ÷ untracked training", header, rows, notes
