"""``lca demo --backend torch``: the shared digits MLP (see :mod:`lca_core.demo`) in a plain
PyTorch loop with ``lca_torch.Tracker``."""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from lca_core.demo import LAYERS, DigitsSplit, learning_rate, tracker_options
from lca_core.summary import Summary

from .tracker import Tracker


def mnist_fc(weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> nn.Sequential:
    """The paper's MNIST-FC shape (hidden 100, 50; ReLU), layers fc1…fc3, given weights."""
    modules: list[tuple[str, nn.Module]] = []
    for i, name in enumerate(LAYERS):
        kernel, bias = weights[name]
        linear = nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
        modules.append((name, linear))
        if i < len(LAYERS) - 1:
            modules.append((f"relu{i + 1}", nn.ReLU()))
    return nn.Sequential(OrderedDict(modules))


def train(
    args: argparse.Namespace,
    data: DigitsSplit,
    weights: dict[str, tuple[np.ndarray, np.ndarray]],
    batches: Iterator[np.ndarray],
) -> Summary:
    model = mnist_fc(weights)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    loss_fn = nn.CrossEntropyLoss()
    lr = learning_rate(args)
    if args.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    val = (torch.from_numpy(data.xv), torch.from_numpy(data.yv))
    tracker = Tracker(model, loss_fn, (x, y), args.out, val_data=val, **tracker_options(args))
    for idx in batches:
        index = torch.from_numpy(idx)
        loss = loss_fn(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        with tracker.step():
            optimizer.step()
    return tracker.close()
