"""A DDP job (torchrun): the same Tracker in every process; each evaluates its shard.

torchrun --standalone --nproc_per_node 2 examples/ddp_torchrun.py [--steps 40] [--out RUN]

Every process passes the whole evaluation set; lca evaluates every world-th chunk of it in
each process, all-reduces the sums in float64, so every process gets the same allocation,
and rank 0 alone writes the run. On CPU the processes talk over gloo; on GPUs use "nccl".
"""

import os
import sys
from collections import OrderedDict

import torch
import torch.distributed as dist
from _common import arguments, digits
from lca_torch import Tracker
from torch import nn

args = arguments(__doc__, steps=40)
if "RANK" not in os.environ:  # started as a plain script: torchrun sets RANK, WORLD_SIZE, …
    sys.exit(
        "this example is a DDP job: start it with torchrun, e.g.\n"
        "  torchrun --standalone --nproc_per_node 2 examples/ddp_torchrun.py"
    )
dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank = dist.get_rank()
x, y, x_eval, y_eval = (torch.from_numpy(a) for a in digits())
torch.manual_seed(0)  # the same initial weights in every process, as DDP requires
model = nn.parallel.DistributedDataParallel(
    nn.Sequential(OrderedDict(fc1=nn.Linear(64, 100), relu=nn.ReLU(), fc2=nn.Linear(100, 10)))
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
tracker = Tracker(model, loss_fn, (x_eval, y_eval), args.out, batch_size=100)
generator = torch.Generator().manual_seed(rank)  # each process its own batches
for _ in range(args.steps):
    idx = torch.randint(0, len(x), (64,), generator=generator)
    loss = loss_fn(model(x[idx]), y[idx])
    optimizer.zero_grad()
    loss.backward()  # DDP averages the gradients over the processes
    with tracker.step():
        optimizer.step()
summary = tracker.close()  # the same summary in every process
if rank == 0:
    print(summary)
    print(f"\nrun written to {args.out} by rank 0; {dist.get_world_size()} processes evaluated it")
dist.destroy_process_group()
