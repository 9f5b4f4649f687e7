"""``lca demo`` with PyTorch: an MNIST-FC-shaped MLP on scikit-learn's bundled digits.

The paper's MNIST-FC is 784-100-50-10 with SGD momentum 0.9; the digits are 8×8, so the
demo trains 64-100-50-10 on them — same shape of network, data that ships with a package.
"""

from __future__ import annotations

import argparse
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lca_core import NotARunError, open_run
from lca_core.report import write_report
from lca_core.summary_table import format_summary

from .tracker import Tracker


def load_digits_split(seed: int) -> tuple[torch.Tensor, ...]:
    """Digits scaled to [0, 1], split 1500 train / 297 validation (seeded)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.int64)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def mnist_fc(n_in: int = 64) -> nn.Sequential:
    """The paper's MNIST-FC shape (hidden 100, 50; ReLU) with named layers fc1…fc3."""
    layers = [
        ("fc1", nn.Linear(n_in, 100)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(100, 50)),
        ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(50, 10)),
    ]
    return nn.Sequential(OrderedDict(layers))


def _prepare_out(out: Path) -> None:
    """Replace an earlier run at ``out``; never delete a directory that is not a run."""
    if out.exists() and any(out.iterdir()):
        try:
            open_run(out)
        except NotARunError:
            raise FileExistsError(
                f"{out} exists and is not an lca run; choose another --out"
            ) from None
        shutil.rmtree(out)


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    x, y, xv, yv = load_digits_split(args.seed)
    model = mnist_fc(x.shape[1])
    loss_fn = nn.CrossEntropyLoss()
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr or 1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr or 0.05, momentum=0.9)
    out = Path(args.out)
    _prepare_out(out)
    tracker = Tracker(
        model,
        loss_fn,
        (x, y),
        out,
        val_data=(xv, yv),
        per_class=True,
        store_params=True,
        store_grads=True,
        store_trajectory=True,
        progress=True,
        metadata={
            "demo": "digits MLP 64-100-50-10",
            "optimizer": args.optimizer,
            "lr": optimizer.param_groups[0]["lr"],
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    done = 0
    while done < args.steps:
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            with tracker.step():
                optimizer.step()
            done += 1
            if done == args.steps:
                break
    return tracker.close()


def run(args: argparse.Namespace) -> int:
    summary = train(args)
    print(f"\nLCA of {summary['steps']} steps written to {args.out}\n")
    print(format_summary(summary))
    report = write_report(args.out, Path(args.out).with_suffix(".html"), frames=args.frames)
    print(f"\nreport: {report}  (open it in a browser; `lca analyze {args.out}` for numbers)")
    return 0
