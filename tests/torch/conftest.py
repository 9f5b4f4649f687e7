from collections import OrderedDict

import pytest
import torch
from torch import nn

from lca_core.tools.demo import digits_split


@pytest.fixture(scope="session")
def digits():
    x, y, xv, yv = (torch.from_numpy(a) for a in digits_split(0))
    return x[:600], y[:600], xv, yv


def mlp(n_in=64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(n_in, 32),
            relu1=nn.ReLU(),
            fc2=nn.Linear(32, 16),
            relu2=nn.ReLU(),
            fc3=nn.Linear(16, 10),
        )
    )


def small_cnn(seed=0, dropout=0.0):
    """8×8 single-channel images → conv-BN-ReLU-pool → linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            unflatten=nn.Unflatten(1, (1, 8, 8)),
            conv=nn.Conv2d(1, 6, 3, padding=1),
            bn=nn.BatchNorm2d(6),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            drop=nn.Dropout(dropout),
            fc=nn.Linear(6 * 4 * 4, 10),
        )
    )


def train(model, tracker, x, y, steps, lr=0.05, momentum=0.9, batch=50, seed=0, params=None):
    """Plain SGD loop over shuffled minibatches; the tracker (if any) wraps the step."""
    opt = torch.optim.SGD(
        params if params is not None else model.parameters(), lr=lr, momentum=momentum
    )
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if tracker is None:
            opt.step()
        else:
            with tracker.step():
                opt.step()
        losses.append(loss.item())
    return losses, opt
