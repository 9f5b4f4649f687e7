"""A plain PyTorch loop: one line around `optimizer.step()` tracks every step.

python examples/torch_loop.py [--steps 60] [--out RUN]
"""

from collections import OrderedDict

import torch
from _common import arguments, digits
from lca_torch import Tracker
from torch import nn

args = arguments(__doc__)
x, y, x_eval, y_eval = (torch.from_numpy(a) for a in digits())
torch.manual_seed(0)
model = nn.Sequential(
    OrderedDict(fc1=nn.Linear(64, 100), relu=nn.ReLU(), fc2=nn.Linear(100, 10))
)  # named layers: "fc1", "fc2" in the run (a bare Sequential gives "0", "2")
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

# the loss LCA splits: the full evaluation set, evaluated at every step
# optimizer=: each step's LCA also split into gradient, momentum and weight-decay parts
tracker = Tracker(
    model, loss_fn, (x_eval, y_eval), args.out, store_params=True, optimizer=optimizer
)
for _ in range(args.steps):
    idx = torch.randint(0, len(x), (64,))
    loss = loss_fn(model(x[idx]), y[idx])
    optimizer.zero_grad()
    loss.backward()
    with tracker.step():  # θ before and after: this step's loss change is allocated
        optimizer.step()
print(tracker.close())
print(f"\nrun written to {args.out}; try `lca report {args.out} -o report.html`")
