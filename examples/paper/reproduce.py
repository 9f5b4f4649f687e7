"""The paper's findings (Lan et al., NeurIPS 2019), reproduced on data that ships offline.

Trains an FC net, a LeNet-like CNN and a small ResNet with BatchNorm on scikit-learn's
8×8 digits and on MNIST-1D (generated locally), each with SGD (momentum 0 and 0.9) and
Adam, over several seeds, with LCA on every step; measures every finding of the paper on
each run and writes docs/reproduction.md: the paper's number, ours (mean ± std over seeds)
and a verdict.

    python examples/paper/reproduce.py --quick     # minutes: fewer steps and seeds
    python examples/paper/reproduce.py             # the full page: under an hour on 2 cores

Needs ``pip install "loss-change-allocation[paper]"`` (torch, scikit-learn, mnist1d).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from findings import FINDINGS, measure
from lca_torch import Tracker
from networks import NETWORKS
from torch import nn

from lca_core import open_run

ROOT = Path(__file__).resolve().parents[2]
#: optimizer name → (factory, learning rate), the paper's three settings
OPTIMIZERS = {
    "sgd": (lambda p, lr: torch.optim.SGD(p, lr=lr), 0.1),
    "sgd-momentum": (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), 0.02),
    "adam": (lambda p, lr: torch.optim.Adam(p, lr=lr), 0.002),
}
BATCH = 250  # the paper's batch size


@dataclass(frozen=True)
class Dataset:
    name: str
    shape: tuple[int, ...]  # as a convolutional network sees one example
    x: np.ndarray  # (N, features) float32: the training set, also the evaluation set
    y: np.ndarray


def digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits; 1500 for training (the rest unused)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))[:1500]
    return Dataset("digits", (1, 8, 8), (x[order] / 16).astype(np.float32), y[order])


def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus 2020), generated offline with its default arguments: 4000
    training sequences of length 40."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return Dataset("mnist1d", (1, 40), data["x"].astype(np.float32), data["y"].astype(np.int64))


DATASETS = {"digits": digits, "mnist1d": mnist1d}


def train(data: Dataset, network: str, optimizer: str, seed: int, steps: int, out: Path):
    """One run with LCA on every step and every array the analyses need; its findings."""
    torch.manual_seed(seed)
    model = NETWORKS[network](data.shape)
    make, lr = OPTIMIZERS[optimizer]
    opt = make(model.parameters(), lr)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    tracker = Tracker(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        store=out,
        per_class=True,
        store_params=True,
        store_grads=True,
        store_trajectory=True,
        optimizer=opt,
        progress=False,
        metadata={"dataset": data.name, "network": network, "optimizer": optimizer},
    )
    rng = np.random.default_rng(seed)
    order = np.array([], dtype=np.int64)
    for _ in range(steps):
        if len(order) < BATCH:  # epochs of shuffled batches, as the paper trains
            order = np.concatenate([order, rng.permutation(len(x))])
        idx, order = torch.from_numpy(order[:BATCH]), order[BATCH:]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        with tracker.step():
            opt.step()
    tracker.close()
    return measure(open_run(out), data.x)


def _config(row: dict) -> tuple:
    return row["dataset"], row["network"], row["optimizer"], row["seed"]


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return "–"
    return f"{a.mean():.3g} ± {a.std(ddof=1):.2g}" if len(a) > 1 else f"{a[0]:.3g}"


def page(results: list[dict], settings: dict) -> str:
    """docs/reproduction.md: the settings, then one section per finding."""
    lines = [
        "# The paper, reproduced",
        "",
        "Lan, Liu, Zhou & Yosinski, *LCA: Loss Change Allocation for Neural Network Training*,",
        "NeurIPS 2019 — each finding next to ours, measured with lca on networks of the",
        "paper's three kinds trained on data that ships offline. This page is written by",
        f"`python examples/paper/reproduce.py{' --quick' if settings['quick'] else ''}`",
        f"({settings['date']}, {settings['machine']}, {settings['minutes']:.1f} min); every",
        "number below comes from that run, whose measurements are in",
        "`examples/paper/results.json` (`--from-results` rewrites this page from them).",
        *[
            f"Re-run with `--merge` on {u['date']} ({u['minutes']:.1f} min), with the optimizer "
            f"split: {', '.join(u['configs'])}."
            for u in settings.get("updates", [])
        ],
        "",
        "**Setup.** Datasets: scikit-learn's 8×8 digits (1500 training images) and MNIST-1D",
        "(4000 sequences of length 40) — the paper used MNIST (55k 28×28) and CIFAR-10.",
        "Networks: `fc` (inputs-100-50-10, the paper's MNIST-FC shape), `lenet` (conv·20,",
        "pool, conv·40, pool, FC 100, FC 10, 3-wide kernels), `resnet` (stem + three",
        "BatchNorm basic blocks of widths 8/16/32, global pooling, FC; ResNet-20-like).",
        f"Optimizers: SGD (lr {OPTIMIZERS['sgd'][1]}), SGD with momentum 0.9 (lr",
        f"{OPTIMIZERS['sgd-momentum'][1]}), Adam (lr {OPTIMIZERS['adam'][1]}); batch {BATCH};",
        f"{settings['steps']} steps; seeds {settings['seeds']}. LCA: Simpson with adaptive",
        "refinement to |residual| < 1e-3 per step (the paper's method), the whole training",
        "set as the evaluation set, BatchNorm on each evaluation chunk's statistics.",
        "Values are mean ± std over seeds.",
        "",
    ]
    for finding in FINDINGS:
        lines += finding.section(results)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and seeds (minutes)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, help="runs per configuration")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--page", default=str(ROOT / "docs" / "reproduction.md"))
    parser.add_argument("--results", help="also write every run's measurements as JSON")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs in DIR (default: deleted)")
    parser.add_argument(
        "--from-results", metavar="JSON", help="rewrite the page from saved --results, no training"
    )
    parser.add_argument(
        "--merge",
        metavar="JSON",
        help="train only the chosen configurations and replace their runs in these saved "
        "--results (the page is rewritten from all of them)",
    )
    args = parser.parse_args()
    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text())
        Path(args.page).write_text(page(saved["runs"], saved["settings"]))
        print(f"wrote {args.page}")
        return 0
    steps = args.steps or (80 if args.quick else 300)
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    start = time.time()
    runs_dir = Path(args.keep or tempfile.mkdtemp(prefix="lca-paper-"))
    results = []
    for name in args.datasets:
        data = DATASETS[name]()
        for network in args.networks:
            for optimizer in args.optimizers:
                for seed in seeds:
                    out = runs_dir / f"{name}-{network}-{optimizer}-{seed}"
                    t0 = time.time()
                    found = train(data, network, optimizer, seed, steps, out)
                    found |= {"dataset": name, "network": network, "optimizer": optimizer}
                    results.append(found | {"seed": seed})
                    print(
                        f"{out.name}: {time.time() - t0:.0f} s, helped (zeros ignored) "
                        f"{found['helped_nonzero']:.1f} %",
                        flush=True,
                    )
                    if not args.keep:
                        shutil.rmtree(out)
    if not args.keep:
        runs_dir.rmdir()
    settings = {
        "quick": args.quick,
        "steps": steps,
        "seeds": seeds,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
        "minutes": (time.time() - start) / 60,
    }
    if args.merge:
        saved = json.loads(Path(args.merge).read_text())
        if (saved["settings"]["steps"], saved["settings"]["seeds"]) != (steps, seeds):
            raise SystemExit("--merge: the saved runs have other steps or seeds")
        new = {_config(r): r for r in results}
        rerun = sorted({f"{d}-{n}-{o}" for d, n, o, _ in new})
        results = [new.pop(_config(r), r) for r in saved["runs"]] + list(new.values())
        update = {"date": settings["date"], "minutes": settings["minutes"], "configs": rerun}
        settings = saved["settings"] | {"updates": [*saved["settings"].get("updates", []), update]}
    Path(args.page).write_text(page(results, settings))
    print(f"wrote {args.page}")
    if args.results:
        Path(args.results).write_text(json.dumps({"settings": settings, "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
