"""Large K on this machine's CPU: GPT-2 small (124 M parameters, from its config, random
weights) on a small token set and ResNet-18 (11.2 M) on a few CIFAR-shaped images — an
LCA step against the hand-written passes it makes, with lca's arithmetic on the host
(numpy float64) and where the gradients are (torch tensors; here the CPU too).

The sets are small so that a pass takes seconds here; what is measured is the core's
share of a step when K is large: 'overhead' = LCA step − passes × hand-written pass.
"""

from __future__ import annotations

import torch
from bench_gpu import gpt2, lm_loss, measure, resnet18
from torch import nn


def cases(quick: bool) -> list[tuple[str, nn.Module, object, tuple, int, int]]:
    g = torch.Generator().manual_seed(0)
    n_img = 16 if quick else 64
    images = torch.randn(n_img, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n_img,), generator=g)
    lm = gpt2(quick)
    n_seq, length = (4, 32) if quick else (4, 64)
    tokens = torch.randint(0, lm.config.vocab_size, (n_seq, length), generator=g)
    torch.manual_seed(0)
    return [
        (f"ResNet-18, N={n_img} images", resnet18(), nn.functional.cross_entropy,
         (images, labels), 16, n_img),
        (f"GPT-2 {'2-layer' if quick else 'small'}, N={n_seq}×{length} tokens", lm, lm_loss,
         (tokens, tokens), 2, n_seq),
    ]  # fmt: skip


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    torch.set_num_threads(torch.get_num_threads())
    steps = 2 if quick else 3
    rows = []
    for name, model, loss_fn, (x, y), batch, chunk in cases(quick):
        for arithmetic in ("host", "device"):
            m = measure(model, loss_fn, x, y, batch, chunk, steps, arithmetic=arithmetic)
            rows.append(
                [
                    name,
                    f"{m['k'] / 1e6:.1f} M",
                    arithmetic,
                    f"{m['pass_ms'] / 1e3:.2f}",
                    f"{m['lca_ms'] / 1e3:.2f}",
                    f"{m['overhead_ms'] / 1e3:.2f}",
                    f"{m['ratio']:.3f}",
                ]
            )
    notes = (
        f"torch {torch.__version__}, CPU ({torch.get_num_threads()} threads), Simpson; median "
        f"of {steps} steps, each interleaved with a hand-written full-set gradient pass on a "
        "copy of the model. 'ratio' = LCA step ÷ (passes × hand pass), goal ≤ 1.10; "
        "'overhead' = LCA step − passes × hand pass: lca's own seconds per step (its "
        "K-long arithmetic, on the host or on the tensors)."
    )
    header = ["case", "K", "arithmetic", "hand pass s", "LCA step s", "overhead s", "ratio"]
    return "Large K on the CPU: an LCA step against its passes", header, rows, notes
