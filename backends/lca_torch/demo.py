"""``lca demo --backend torch``: the shared digits MLP (see :mod:`lca_core.tools.demo`) in a plain
PyTorch loop with ``lca_torch.Tracker``."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from lca_core.engine.summary import Summary
from lca_core.tools.demo import LAYERS, Experiment

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


def train(exp: Experiment) -> Summary:
    """The demo in a plain PyTorch loop, tracked with ``with tracker.step()``."""
    model, data = mnist_fc(exp.weights), exp.data
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    loss_fn = nn.CrossEntropyLoss()
    if exp.adam:
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=exp.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=exp.lr, momentum=0.9)
    val = (torch.from_numpy(data.xv), torch.from_numpy(data.yv))
    tracker = Tracker(
        model, loss_fn, (x, y), exp.out, val_data=val, optimizer=optimizer, **exp.options
    )
    tracker.expected_steps = exp.args.steps  # the forecast projects the whole run
    for idx in exp.batches:
        index = torch.from_numpy(idx)
        loss = loss_fn(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        with tracker.step():
            optimizer.step()
    return tracker.close()
