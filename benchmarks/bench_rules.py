"""Rules and subsets: gradient passes per step and error against a fine-panel oracle.

One trajectory per case is recorded in PyTorch (digits MLP 64-100-50-10 with SGD momentum
0.9 and with Adam; a small CNN with BatchNorm on 8×8 digits with SGD), then allocated with
each rule at tol 1e-3 and, for the oracle, with Simpson at 64 panels. The error is the
largest per-layer |LCA − oracle| over all steps; the per-parameter column is the largest
|A_i − oracle_i| relative to the largest |oracle_i|. Subsets are allocated on the same
trajectory with ``eval_subset``; their error is against the full set's allocation, and
'coverage' is the share of (step, layer) pairs whose 95 % t-interval holds the full-set
value.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import torch
from lca_torch import TorchBackend
from scipy import stats
from torch import nn

from lca_core import Allocator, Snapshot


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor((x / 16).astype(np.float32)), torch.tensor(y)


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10)
    )


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.view(-1, 1, 8, 8))))
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


CASES = {
    "MLP, SGD momentum 0.9": (mlp, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "MLP, Adam": (mlp, lambda p: torch.optim.Adam(p, lr=1e-3)),
    "CNN with BatchNorm, SGD momentum 0.9": (
        CNN,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
}


def trajectory(make_model, make_opt, x, y, steps: int) -> tuple[nn.Module, list[np.ndarray]]:
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model.parameters())
    backend = TorchBackend(model, nn.CrossEntropyLoss(), (x, y))
    thetas = [backend.snapshot().theta.copy()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        thetas.append(backend.snapshot().theta.copy())
    return model, thetas


def allocate(backend, thetas, **options) -> dict:
    """Per step: LCA (T, K), layer LCA and standard errors (T, L); seconds per step after
    the first (which also checks determinism); the allocator."""
    alloc = Allocator(backend, **options)
    alloc.start(Snapshot(thetas[0]))
    results, seconds = [], []
    for theta in thetas[1:]:
        started = time.perf_counter()
        results.append(alloc.advance(Snapshot(theta)))
        seconds.append(time.perf_counter() - started)
    alloc.close()
    return {
        "lca": np.array([r.lca for r in results]),
        "layers": np.array([r.layer_lca for r in results]),
        "stderr": np.array([r.layer_lca_stderr for r in results]),
        "seconds": float(np.median(seconds[1:])),
        "alloc": alloc,
    }


def passes_per_step(alloc: Allocator, steps: int) -> float:
    return (alloc.gradient_passes - 3) / steps  # θ_0 is evaluated three times (determinism)


def run_rules(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    x, y = digits()
    steps = 12 if quick else 40
    rows = []
    for case, (make_model, make_opt) in CASES.items():
        model, thetas = trajectory(make_model, make_opt, x, y, steps)
        backend = TorchBackend(model, nn.CrossEntropyLoss(), (x, y))
        oracle = allocate(backend, thetas, tol=1e-12, max_panels=64)
        scale = np.abs(oracle["lca"]).max()
        for rule in ("simpson", "trapezoid", "auto", "first_order"):
            out = allocate(backend, thetas, rule=rule)
            alloc, summary = out["alloc"], out["alloc"].summary()
            rows.append(
                [
                    case,
                    rule,
                    f"{passes_per_step(alloc, steps):.2f}",
                    f"{np.abs(out['layers'] - oracle['layers']).max():.1e}",
                    f"{np.abs(out['lca'] - oracle['lca']).max() / scale:.1e}",
                    f"{100 * summary.budget_used:.3f} %",
                    f"{summary.unconverged_steps}/{steps}",
                    f"{1e3 * out['seconds']:.1f}",
                ]
            )
    notes = (
        f"torch {torch.__version__}, CPU, N = {len(x)} evaluation examples, {steps} steps, "
        "tol 1e-3, max_panels 32; oracle: Simpson with 64 panels. Passes per step exclude "
        "the three evaluations of θ_0 (determinism check)."
    )
    header = [
        "case",
        "rule",
        "passes/step",
        "max per-layer error",
        "max per-param error (rel.)",
        "budget used",
        "unconverged",
        "ms/step",
    ]
    return "Rules: passes per step and error against a 64-panel oracle", header, rows, notes


def mnist_sized(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated data of MNIST's size and width (the case where a pass costs)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 784)).astype(np.float32)
    y = (x[:, :10].argmax(1) + (x[:, 10] > 1)) % 10
    return torch.tensor(x), torch.tensor(y)


def wide_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10)
    )


def run_subsets(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    cases = {
        "digits MLP 64-100-50-10": (digits(), mlp, 12 if quick else 40),
        "MLP 784-100-50-10": (
            mnist_sized(12_000 if quick else 60_000),
            wide_mlp,
            6 if quick else 12,
        ),
    }
    seeds = 1 if quick else 5
    rows = []
    for case, ((x, y), make_model, steps) in cases.items():
        model, thetas = trajectory(
            make_model, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), x, y, steps
        )
        full = allocate(TorchBackend(model, nn.CrossEntropyLoss(), (x, y)), thetas)
        rows.append(
            [case, f"full ({len(x)})", "—", f"{1e3 * full['seconds']:.2f}", "1.00", "—", "—"]
        )
        for fraction in (0.5, 0.25, 0.1, 0.02):
            coverage, errors, seconds, stderr = [], [], [], []
            for seed in range(seeds):
                backend = TorchBackend(model, nn.CrossEntropyLoss(), (x, y))
                backend.use_subset(fraction, seed=seed)
                out = allocate(backend, thetas)
                t = stats.t.ppf(0.975, backend.subset["groups"] - 1)
                error = np.abs(out["layers"] - full["layers"])
                coverage.append(np.mean(error <= t * out["stderr"]))
                errors.append(error.max())
                seconds.append(out["seconds"])
                stderr.append(out["stderr"].mean())
            rows.append(
                [
                    case,
                    f"{fraction} ({backend.subset['size']})",
                    f"{np.mean(stderr):.1e}",
                    f"{1e3 * np.median(seconds):.2f}",
                    f"{np.median(seconds) / full['seconds']:.2f}",
                    f"{max(errors):.1e}",
                    f"{100 * np.mean(coverage):.0f} %",
                ]
            )
    notes = (
        f"Same trajectory per case (SGD momentum 0.9), Simpson, tol 1e-3, {seeds} subset "
        "seeds per size, 16 random groups of equal size per subset (the subset rounded down "
        "to a multiple of 16). 'coverage': (step, layer) pairs whose 95 % t-interval holds "
        "the full-set value. The 16 groups are evaluated in one torch.func.vmap call per "
        "node (their parts give the error bars), so a subset pass costs about its share of "
        "the examples plus one call's overhead."
    )
    header = [
        "case",
        "eval_subset",
        "mean stderr",
        "ms/step",
        "time ÷ full",
        "max error vs full",
        "95 % coverage",
    ]
    return "Subsets: cost and error bars against the full set", header, rows, notes


def run_subset_memory(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    """Host memory of a subset's steps: the group gradients (G × K float64) they hold."""
    torch.manual_seed(0)
    x, y = torch.randn(2000, 1000), torch.randint(0, 10, (2000,))
    model = nn.Sequential(nn.Linear(1000, 990), nn.ReLU(), nn.Linear(990, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    thetas = [TorchBackend(model, nn.CrossEntropyLoss(), (x, y)).snapshot().theta]
    for _ in range(2 if quick else 4):
        idx = torch.randint(0, len(x), (100,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        thetas.append(TorchBackend(model, nn.CrossEntropyLoss(), (x, y)).snapshot().theta)
    rows = []
    for rule, tol in (("simpson", 1e-3), ("auto", 1e-3), ("simpson", 1e-12)):
        backend = TorchBackend(model, nn.CrossEntropyLoss(), (x, y))
        backend.use_subset(0.5)
        alloc = Allocator(backend, rule=rule, tol=tol, max_panels=8)
        size = backend.subset["groups"] * backend.layout.size * 8
        peaks, panels = [], []
        tracemalloc.start()  # numpy's arrays from the start on: θ_0's group gradients too
        try:
            alloc.start(Snapshot(thetas[0]))
            for theta in thetas[1:]:
                tracemalloc.reset_peak()
                panels.append(alloc.advance(Snapshot(theta)).panels)
                held, peak = tracemalloc.get_traced_memory()
                peaks.append(peak)
        finally:
            tracemalloc.stop()
        rows.append(
            [
                f"{rule}, tol {tol:g}",
                f"{np.mean(panels):.1f}",
                f"{held / size:.2f}",
                f"{max(peaks) / size:.2f}",
                f"{max(peaks) / 2**20:.0f}",
            ]
        )
    notes = (
        f"PyTorch MLP 1000-990-10 (K = {backend.layout.size:,}), eval_subset=0.5 of 2000 "
        f"examples, G = {backend.subset['groups']} groups, SGD steps; max_panels=8 (tol "
        "1e-12 refines every step to it). Host memory allocated since the allocator's "
        "start and still held after a step ('held': mostly the end point's group gradients, "
        "kept for the next step) and at a step's peak (tracemalloc: numpy's arrays, not "
        "torch's own buffers)."
    )
    header = ["rule", "panels", "held ÷ G×K", "step peak ÷ G×K", "step peak MiB"]
    return "Subsets: host memory of the group gradients", header, rows, notes
