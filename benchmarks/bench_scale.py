"""Scale: peak memory of a held vs a streamed evaluation set as N grows, and one LCA step
in one process vs a 2-process DDP job (gloo, CPU).

Each measurement runs in a fresh process, so its peak resident memory (ru_maxrss) is its
own. The evaluation set is generated on demand (a Dataset whose examples exist only when
read), so only the path under test holds it: held = the chunks kept by the backend,
streamed = read chunk by chunk at every pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

MEMORY = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from torch import nn
    from lca_torch import TorchBackend
    n, streamed = int(sys.argv[1]), sys.argv[2] == "streamed"

    class Generated(torch.utils.data.Dataset):
        def __len__(self):
            return n
        def __getitem__(self, i):
            x = torch.randn(784, generator=torch.Generator().manual_seed(i))
            return x, int(x[0] > 0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    loader = torch.utils.data.DataLoader(Generated(), batch_size=4096)
    backend = TorchBackend(model, nn.CrossEntropyLoss(), loader,
                           resident_bytes=1 if streamed else None)
    theta = backend.snapshot().theta
    start = time.perf_counter()
    backend.evaluate([theta])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "pass": seconds}))
    """
)

DDP = textwrap.dedent(
    """
    import json, os, sys, time
    import torch, torch.distributed as dist
    from torch import nn
    from lca_torch import Tracker
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60_000, 784, generator=g)
    y = (x[:, :10].argmax(1) + (x[:, 10] > 1)) % 10
    model = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(),
                          nn.Linear(50, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), batch_size=4096)
    times = []
    for step in range(8):
        idx = torch.randint(0, len(x), (250,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        start = time.perf_counter()
        with tracker.step():
            opt.step()
        times.append(time.perf_counter() - start)
    summary = tracker.close()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"step": sorted(times[1:])[len(times[1:]) // 2],
                          "sum_lca": summary.sum_lca}))
    """
)


def _last_json(args: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_memory(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    sizes = (8_192, 32_768) if quick else (16_384, 65_536, 262_144)
    rows = []
    for n in sizes:
        held = _last_json([sys.executable, "-c", MEMORY, str(n), "held"])
        streamed = _last_json([sys.executable, "-c", MEMORY, str(n), "streamed"])
        rows.append(
            [
                f"{n:,}",
                f"{n * 785 * 4 / 2**20:.0f}",
                f"{held['peak'] / 2**20:.0f}",
                f"{streamed['peak'] / 2**20:.0f}",
                f"{held['pass']:.2f}",
                f"{streamed['pass']:.2f}",
            ]
        )
    notes = (
        "MLP 784-100-10 on generated 784-feature examples (a Dataset made on demand), "
        "DataLoader batches of 4096; peak = the process's maximum resident memory after "
        "building the backend and one loss+gradient pass (interpreter and torch included, "
        "about 300 MiB). 'held': the set kept as chunks; 'streamed': resident_bytes=1, the "
        "set read at every pass — its peak does not grow with N."
    )
    header = [
        "N",
        "set MiB",
        "held: peak MiB",
        "streamed: peak MiB",
        "held pass s",
        "streamed pass s",
    ]
    return "Streaming: peak memory vs N (PyTorch, CPU)", header, rows, notes


def run_ddp(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    one = _last_json([sys.executable, "-c", DDP])
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    script = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lca_bench_ddp.py")
    with open(script, "w") as f:
        f.write(DDP)
    two = _last_json(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            script,
        ],
        env,
    )
    rows = [
        ["1 process", f"{1e3 * one['step']:.0f}", "1.00", f"{one['sum_lca']:.9f}"],
        [
            "2 processes (DDP, gloo)",
            f"{1e3 * two['step']:.0f}",
            f"{one['step'] / two['step']:.2f}",
            f"{two['sum_lca']:.9f}",
        ],
    ]
    notes = (
        f"MLP 784-100-50-10, N = 60,000, 8 SGD steps, median LCA step after the first; "
        f"{os.cpu_count()} CPU cores in all (the 2 processes share them, "
        "OMP_NUM_THREADS = half each). Each process evaluates every other chunk and the "
        "sums are all-reduced in float64: Σ LCA agrees to float rounding."
    )
    return (
        "DDP: one LCA step, 1 vs 2 processes (CPU)",
        ["job", "LCA step ms", "speed-up", "Σ LCA"],
        rows,
        notes,
    )


REPLAY = textwrap.dedent(
    """
    import json, sys, tempfile, time
    import torch
    from torch import nn
    from lca_core import replay
    from lca_torch import TorchBackend, Tracker
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20_000, 784, generator=g)
    y = (x[:, :10].argmax(1) + (x[:, 10] > 1)) % 10
    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(),
                             nn.Linear(50, 10))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = tempfile.mkdtemp() + "/rec"
    recorder = Tracker(model, nn.CrossEntropyLoss(), (x, y), run, record_only=True)
    for _ in range(int(sys.argv[1])):
        idx = torch.randint(0, len(x), (250,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        with recorder.step():
            opt.step()
    recorder.close()
    out = {}
    for executor in (None, "ray"):
        start = time.perf_counter()
        summary = replay(run, TorchBackend(mlp(), nn.CrossEntropyLoss(), (x, y)),
                         out=run + f"-{executor}", progress=False, executor=executor, workers=2)
        out[str(executor)] = [time.perf_counter() - start, summary.sum_lca,
                              summary.gradient_passes]
    print(json.dumps(out))
    """
)


def run_replay(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 8 if quick else 120
    out = _last_json([sys.executable, "-c", REPLAY, str(steps)])
    seq = out["None"][0]
    rows = [
        [
            "this process" if name == "None" else "Ray, 2 workers (local)",
            f"{seconds:.1f}",
            f"{seq / seconds:.2f}",
            str(passes),
            f"{lca:.9f}",
        ]
        for name, (seconds, lca, passes) in out.items()
    ]
    notes = (
        f"A record-only run of {steps} SGD steps (MLP 784-100-50-10, N = 20,000), replayed "
        f"with Simpson; {os.cpu_count()} CPU cores, the Ray time includes starting the "
        "local Ray (about 10 s here) — on one 2-core machine Ray pays off only for long "
        "replays; its use is a cluster. Each range re-evaluates its first point (the extra "
        "passes); Σ LCA is the same."
    )
    header = ["replay", "seconds", "speed-up", "gradient passes", "Σ LCA"]
    return "Replay: one process vs Ray tasks (CPU)", header, rows, notes
