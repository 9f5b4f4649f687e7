"""GPU (PyTorch, CUDA): one LCA gradient pass against the GPU's plain training throughput,
and the per-step ratio of ``torch``, for a ResNet-20-shaped CNN on 45k CIFAR-shaped images
and a GPT-2-small-shaped language model, the evaluation set resident on the device.

Needs a CUDA device. ``LCA_BENCH_DEVICE=cpu`` runs the same code on the CPU (with
``--quick``: a check of the benchmark itself, whose numbers say nothing about a GPU).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_torch import interleaved
from lca_torch import Tracker
from torch import nn

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def device() -> torch.device:
    """The device under test: CUDA unless ``LCA_BENCH_DEVICE`` names another."""
    name = os.environ.get("LCA_BENCH_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "the gpu benchmark needs a CUDA device (torch.cuda.is_available() is False); "
            "LCA_BENCH_DEVICE=cpu runs it on the CPU as a check of the benchmark itself"
        )
    return torch.device(name)


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class BasicBlock(nn.Module):
    """ResNet's two 3×3 convolutions with BatchNorm, and a 1×1 shortcut where the shape
    changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 (2 blocks per stage, 64…512 channels, 11.2 M parameters)
    in its CIFAR form (a 3×3 stem, no max-pool), written here: torchvision's wheels pin
    their own torch."""
    blocks: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)]
    blocks.append(nn.ReLU())
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for i in range(2):
            blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*blocks)


def resnet20(classes: int = 10) -> nn.Module:
    """He et al.'s CIFAR ResNet-20: 3 stages of 3 blocks, 16/32/64 channels (~0.27 M)."""
    blocks: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)]
    blocks.append(nn.ReLU())
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*blocks)


def gpt2(quick: bool) -> nn.Module:
    """GPT-2 small's shape (124 M parameters); with ``quick`` a 2-layer one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=2) if quick else GPT2Config()
    return GPT2LMHeadModel(config)


def lm_loss(out: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a causal language model's logits."""
    logits = out.logits[:, :-1]
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )


def cases(quick: bool, dev: torch.device) -> list[tuple[str, nn.Module, LossFn, Any, int, int]]:
    """(name, model, loss, (x, y) on the device, training batch, evaluation chunk)."""
    g = torch.Generator().manual_seed(0)
    n_img = 2048 if quick else 45_000
    images = torch.randn(n_img, 3, 32, 32, generator=g).to(dev)
    labels = torch.randint(0, 10, (n_img,), generator=g).to(dev)
    lm = gpt2(quick)
    n_seq, length = (64, 32) if quick else (2048, 128)
    tokens = torch.randint(0, lm.config.vocab_size, (n_seq, length), generator=g).to(dev)
    torch.manual_seed(0)
    return [
        (
            f"ResNet-20, N={n_img} images 3×32×32",
            resnet20().to(dev),
            nn.functional.cross_entropy,
            (images, labels),
            128,
            512 if quick else 2500,
        ),
        (
            f"GPT-2 {'2-layer' if quick else 'small'}, N={n_seq} sequences × {length} tokens",
            lm.to(dev),
            lm_loss,
            (tokens, tokens),
            16,
            16 if quick else 64,
        ),
    ]


def training_throughput(
    model: nn.Module, loss_fn: LossFn, x: Any, y: torch.Tensor, batch: int, steps: int
) -> float:
    """Examples per second of plain training steps (forward, backward, SGD), on a copy."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dev = y.device
    times = []
    for i in range(steps + 2):
        idx = torch.randint(0, len(y), (batch,), device=dev)
        synchronize(dev)
        start = time.perf_counter()
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        synchronize(dev)
        if i >= 2:  # the first steps allocate and tune kernels
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def measure(
    model: nn.Module,
    loss_fn: LossFn,
    x: Any,
    y: torch.Tensor,
    batch: int,
    chunk: int,
    steps: int,
    arithmetic: str = "auto",
) -> dict[str, float]:
    """Training throughput, one LCA pass, and LCA steps interleaved with hand-written passes
    (as ``bench_torch``), on the same device; lca's arithmetic where ``arithmetic`` says."""
    dev = y.device
    train = training_throughput(model, loss_fn, x, y, batch, steps)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    tracker = Tracker(model, loss_fn, (x, y), batch_size=chunk, device=dev, arithmetic=arithmetic)
    tracker.begin()  # θ_0: its determinism check makes three passes
    theta = tracker.backend.snapshot().theta
    start = time.perf_counter()
    tracker.backend.evaluate([theta])
    one_pass = time.perf_counter() - start
    hand, lca, panels = interleaved(
        model,
        loss_fn,
        x,
        y,
        tracker,
        opt,
        chunk=chunk,
        batch=batch,
        steps=steps,
        sync=lambda: synchronize(dev),
    )
    tracker.close()
    pass_rate = len(y) / one_pass
    return {
        "k": tracker.backend.layout.size,
        "train": train,
        "pass": pass_rate,
        "pass_ms": 1e3 * statistics.median(hand),
        "lca_ms": 1e3 * statistics.median(lca),
        "ratio": statistics.median(lca) / (statistics.mean(panels) * statistics.median(hand)),
        "overhead_ms": 1e3
        * (statistics.median(lca) - statistics.mean(panels) * statistics.median(hand)),
    }


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    dev = device()
    steps = 3 if quick else 10
    rows = []
    for name, model, loss_fn, (x, y), batch, chunk in cases(quick, dev):
        m = measure(model, loss_fn, x, y, batch, chunk, steps)
        rows.append(
            [
                name,
                f"{m['k'] / 1e6:.2f} M",
                f"{m['train']:.0f}",
                f"{m['pass']:.0f}",
                f"{m['pass'] / m['train']:.2f}",
                f"{m['pass_ms']:.1f}",
                f"{m['lca_ms']:.1f}",
                f"{m['ratio']:.3f}",
            ]
        )
    what = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (a check only)"
    notes = (
        f"torch {torch.__version__} on {what}; median of {steps} steps. 'pass ÷ train' = "
        "examples per second of one LCA gradient pass over the whole set ÷ those of plain "
        "training steps (forward, backward, SGD; the training batch), goal ≥ 0.5. 'ratio' "
        "= median LCA step ÷ (mean passes per step × median hand-written pass), goal ≤ 1.10."
    )
    header = [
        "case",
        "K",
        "train ex/s",
        "LCA pass ex/s",
        "pass ÷ train",
        "hand pass ms",
        "LCA step ms",
        "ratio",
    ]
    return (
        "GPU: an LCA pass against training throughput, and the per-step ratio",
        header,
        rows,
        notes,
    )
