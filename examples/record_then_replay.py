"""Record now, allocate later: training pays one parameter copy per step; the gradient
passes run afterwards (elsewhere, on other hardware, resumably) with `replay`.

    python examples/record_then_replay.py [--steps 60] [--out RUN]

With Ray installed (`pip install "loss-change-allocation[ray]"`) the steps are computed by
Ray tasks on a local Ray (or a cluster: `address=`); without it, in this process. The same
from the command line: `lca replay RUN --backend torch --setup FILE.py [--ray [ADDRESS]]`.
"""

import importlib.util
from collections import OrderedDict

import torch
from _common import arguments, digits
from lca_torch import TorchBackend, Tracker
from torch import nn

from lca_core import replay

args = arguments(__doc__)
x, y, x_eval, y_eval = (torch.from_numpy(a) for a in digits())
torch.manual_seed(0)
model = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 100), relu=nn.ReLU(), fc2=nn.Linear(100, 10)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

recorder = Tracker(model, loss_fn, (x_eval, y_eval), args.out, record_only=True)
for _ in range(args.steps):
    idx = torch.randint(0, len(x), (64,))
    loss = loss_fn(model(x[idx]), y[idx])
    optimizer.zero_grad()
    loss.backward()
    with recorder.step():
        optimizer.step()
print(recorder.close())  # steps recorded, nothing allocated yet

# later: any backend over the same architecture and evaluation data allocates the steps
backend = TorchBackend(model, loss_fn, (x_eval, y_eval))
executor = "ray" if importlib.util.find_spec("ray") else None  # the same run either way
print(f"replaying with {executor or 'this process'}")
print(replay(args.out, backend, progress=False, executor=executor, workers=2))
