"""``lca demo``: the same small experiment in every framework.

An MNIST-FC-shaped MLP (the paper's 784-100-50-10, here 64-100-50-10 on scikit-learn's
bundled 8×8 digits) starts from the same weights, sees the same batches in the same order
and writes the same run layout (layers ``fc1``…``fc3``), whichever backend trains it. A
backend's ``demo`` module provides ``train(experiment: Experiment) -> Summary``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..engine.summary import Summary
from ..errors import LCAError

SIZES = (64, 100, 50, 10)
LAYERS = ("fc1", "fc2", "fc3")


class DigitsSplit(NamedTuple):
    x: np.ndarray  # (1500, 64) float32 in [0, 1]
    y: np.ndarray  # (1500,) int64
    xv: np.ndarray  # (297, 64) validation
    yv: np.ndarray


def digits_split(seed: int) -> DigitsSplit:
    """Digits scaled to [0, 1], split 1500 train / 297 validation (seeded)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
    return DigitsSplit(x[:1500], y[:1500], x[1500:], y[1500:])


def initial_weights(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Layer → (kernel (in, out), bias), uniform ±1/√fan_in like PyTorch's default."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for name, n_in, n_out in zip(LAYERS, SIZES[:-1], SIZES[1:], strict=True):
        bound = 1.0 / np.sqrt(n_in)
        kernel = rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32)
        out[name] = (kernel, rng.uniform(-bound, bound, n_out).astype(np.float32))
    return out


def batches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays of ``steps`` shuffled mini-batches (epochs reshuffled, seeded)."""
    rng = np.random.default_rng(seed + 2)
    done = 0
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1


def tracker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every framework's demo tracks with: every optional array, a progress bar."""
    return {
        "per_class": True,
        "store_params": True,
        "store_grads": True,
        "store_trajectory": True,
        "progress": True,
        "metadata": {
            "demo": "digits MLP 64-100-50-10",
            "backend": args.backend,
            "optimizer": args.optimizer,
            "lr": learning_rate(args),
            "batch_size": args.batch_size,
            "steps": args.steps,
            "seed": args.seed,
        },
    }


def learning_rate(args: argparse.Namespace) -> float:
    return args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.05)


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument checked before anything is written."""
    for name in ("steps", "batch_size", "frames"):
        if getattr(args, name) < 1:
            raise LCAError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size > 1500:
        raise LCAError("--batch-size must be at most 1500 (the demo's training set)")
    if learning_rate(args) <= 0:
        raise LCAError("--lr must be positive")


def check_out(out: Path) -> None:
    """Refuse, before any work, an --out that is not empty and not an lca run."""
    from ..storage.lock import LCA_FILES
    from ..storage.store import is_run

    if out.exists() and not out.is_dir():
        raise LCAError(f"--out {out} is a file; give a directory for the run")
    if out.is_dir() and any(e.name not in LCA_FILES for e in out.iterdir()) and not is_run(out):
        raise LCAError(
            f"--out {out} holds files that are not an lca run; lca never deletes what it did "
            "not write. Choose another --out."
        )


def demo_module(backend: str) -> Any:
    """The ``demo`` module of the package that provides backend ``backend``."""
    from ..backend_kit.plugins import load_backend

    package = load_backend(backend).__module__.split(".")[0]
    try:
        return importlib.import_module(f"{package}.demo")
    except ModuleNotFoundError as exc:
        raise LCAError(f"the {backend!r} backend ships no demo ({exc})") from exc


@dataclass(frozen=True)
class Experiment:
    """What a backend's demo ``train`` gets: the same in every framework."""

    args: argparse.Namespace
    data: DigitsSplit
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    batches: Iterator[np.ndarray]

    @property
    def lr(self) -> float:
        return learning_rate(self.args)

    @property
    def adam(self) -> bool:
        """Adam (else SGD with momentum 0.9)."""
        return bool(self.args.optimizer == "adam")

    @property
    def out(self) -> str:
        return str(self.args.out)

    @property
    def options(self) -> dict[str, Any]:
        return tracker_options(self.args)


def run(args: argparse.Namespace, train: Callable[..., Summary] | None = None) -> int:
    """Train with the chosen backend, print the summary, write the report beside the run."""
    from ..storage.outputs import check_output
    from ..storage.store import replace_run
    from .report import write_report

    check_arguments(args)
    train = train or demo_module(args.backend).train
    out = Path(args.out)
    check_out(out)
    html = check_output(out.with_suffix(".html"), force=args.force)
    # the new run is written beside the old one and replaces it only once it is complete
    fresh = out.parent / f".{out.name}.lca-new-{os.getpid()}"
    data = digits_split(args.seed)
    try:
        summary = train(
            Experiment(
                argparse.Namespace(**{**vars(args), "out": str(fresh)}),
                data,
                initial_weights(args.seed),
                batches(len(data.x), args.batch_size, args.steps, args.seed),
            )
        )
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)  # ours: the unfinished new run
        raise
    replace_run(fresh, out)
    print(f"\nLCA of {summary.steps} steps ({args.backend}) written to {out}\n")
    print(summary)
    report = write_report(out, html, frames=args.frames, force=args.force)
    print(f"\nreport: {report}  (open it in a browser; `lca analyze {out}` for numbers)")
    return 0
