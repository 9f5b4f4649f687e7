"""Subset LCA: evaluate 20 % of the evaluation set, get a standard error for every layer
and step, and see the full set's allocation fall inside the intervals.

    python examples/subset_error_bars.py [--steps 30] [--out RUN]
"""

from collections import OrderedDict

import numpy as np
import torch
from _common import arguments, digits
from lca_torch import TorchBackend, Tracker
from scipy import stats
from torch import nn

from lca_core import Allocator, Snapshot, open_run

args = arguments(__doc__, steps=30)
x, y, x_eval, y_eval = (torch.from_numpy(a) for a in digits(n_eval=1000))
torch.manual_seed(0)
model = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 100), relu=nn.ReLU(), fc2=nn.Linear(100, 10)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

tracker = Tracker(
    model, loss_fn, (x_eval, y_eval), args.out, eval_subset=0.2, store_trajectory=True
)
for _ in range(args.steps):
    idx = torch.randint(0, len(x), (64,))
    loss = loss_fn(model(x[idx]), y[idx])
    optimizer.zero_grad()
    loss.backward()
    with tracker.step():
        optimizer.step()
print(tracker.close())

run = open_run(args.out)
subset = run.config["eval_subset"]
t = stats.t.ppf(0.975, subset["groups"] - 1)
print(f"\n{subset['size']} of {subset['of']} examples per pass; 95 % intervals per layer:")
for name, value, se in zip(
    run.layers, run.layer_lca.sum(0), np.sqrt((run.layer_lca_stderr**2).sum(0)), strict=True
):
    print(f"  {name:<4} Σ LCA {value:+.4f} ± {t * se:.4f}")

# check against the full set on the same trajectory (what the error bars promise)
full = Allocator(TorchBackend(model, loss_fn, (x_eval, y_eval)))
full.start(Snapshot(run.theta(0)))
truth = np.array([full.advance(Snapshot(run.theta(i + 1))).layer_lca for i in range(run.steps)])
inside = np.abs(run.layer_lca - truth) <= t * run.layer_lca_stderr
print(f"full-set values inside the 95 % intervals: {100 * inside.mean():.0f} % of (step, layer)")
