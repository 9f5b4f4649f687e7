"""LCA time per step ÷ (2 × one hand-written full-set gradient pass), PyTorch.

Both are timed in the same process on the same model and evaluation data; Simpson needs
two new gradient passes per step (the endpoint is reused), so 1.0 is the floor.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from common import HEADER, REPEATS, cases, ratio_row, ratio_rows, timings
from lca_torch import Tracker
from lca_torch.backend import _evaluation_mode, layout_of
from lca_torch.places import Places
from torch import nn
from torch._utils import _flatten_dense_tensors as flatten_dense_tensors

from lca_core.layout import sign_counts


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def tracked_step_seconds(model: nn.Module, opt: Any, tracker: Any, x, y, steps: int) -> list:
    """Wall seconds of each tracked step (``with tracker.step(): opt.step()``) of ``steps``
    seeded batches of 128; the tracker is closed after them."""
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        start = time.perf_counter()
        with tracker.step():
            opt.step()
        seconds.append(time.perf_counter() - start)
    tracker.close()
    return seconds


def hand_written_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> None:
    """What a user would write: mean loss over the set, backward chunk by chunk."""
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x), chunk):
        xb, yb = x[i : i + chunk], y[i : i + chunk]
        (loss_fn(model(xb), yb) * (len(xb) / len(x))).backward()


def timed_pass(
    reference: nn.Module,
    x: Any,
    y: torch.Tensor,
    chunk: int,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    sync: Callable[[], None] = lambda: None,
) -> float:
    """Seconds of one hand-written pass (``sync`` waits for the device around it)."""
    sync()
    start = time.perf_counter()
    hand_written_pass(reference, x, y, chunk, loss_fn)
    sync()
    return time.perf_counter() - start


def tracked_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    x: Any,
    y: torch.Tensor,
    idx: torch.Tensor,
    stepper: Any,
) -> tuple[float, Any]:
    """A training step on ``x[idx]``, then its allocation by ``stepper`` (a tracker or a
    :class:`BareStep`): the seconds of ``end()`` and the next ``begin()``, and what
    ``end()`` returned."""
    loss = loss_fn(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    start = time.perf_counter()
    result = stepper.end()
    stepper.begin()
    return time.perf_counter() - start, result


def interleaved(
    model: nn.Module,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    x: Any,
    y: torch.Tensor,
    tracker: Tracker,
    opt: torch.optim.Optimizer,
    *,
    chunk: int,
    batch: int,
    steps: int,
    sync: Callable[[], None] = lambda: None,
) -> tuple[list[float], list[float], list[int]]:
    """Per step: one hand-written pass on a copy of the model (timed), a training step on
    ``batch`` random examples, and the tracker's allocation of it (timed), so that both
    timings see the same machine. Returns the pass and LCA seconds and the panels."""
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    passes, lca, panels = [], [], []
    for _ in range(steps):
        passes.append(timed_pass(reference, x, y, chunk, loss_fn, sync))
        idx = torch.randint(0, len(y), (batch,), generator=gen)
        seconds, result = tracked_step(model, opt, loss_fn, x, y, idx, tracker)
        lca.append(seconds)
        panels.append(result.panels)
    return passes, lca, panels


def measure(
    sizes: tuple[int, ...], x_np: np.ndarray, y_np: np.ndarray, steps: int, chunk: int = 4096
) -> dict[str, float]:
    """LCA steps interleaved with hand-written passes on the digits-style MLP."""
    torch.manual_seed(0)
    model = mlp(sizes)
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = Tracker(model, nn.CrossEntropyLoss(), (x, y), batch_size=chunk)
    tracker.begin()
    passes, lca, panels = interleaved(
        model, nn.functional.cross_entropy, x, y, tracker, opt, chunk=chunk, batch=250, steps=steps
    )
    tracker.close()
    return timings(passes, lca, panels, warmup=0)


class BareStep:
    """The least a Simpson LCA step can do (a reference for the ratio, not a tool): θ read by
    one cat, the two passes on leaves lent to the model, ḡ, A = Δ·ḡ, the residual, per-layer
    sums, and the check that nothing changed the parameters between steps. With
    ``guarantees``, also what lca keeps that a user would miss: the ``training`` flags and
    the RNG state restored around the passes, and the helped / hurt counts per layer (by
    lca's own code, so that the difference is what they cost)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, guarantees: bool):
        self.model, self.x, self.y, self.guarantees = model, x, y, guarantees
        self.layout = layout_of(model)
        params = [p for _, p in model.named_parameters()]
        self.views = [p.detach().view(-1) for p in params]
        self.places = Places(model)
        self.flat = torch.empty(self.layout.size)
        bounds = zip(self.layout.offsets[:-1], self.layout.offsets[1:], strict=True)
        self.leaves = {
            spec.name: self.flat[lo:hi].view(spec.shape).requires_grad_(True)
            for spec, (lo, hi) in zip(self.layout.params, bounds, strict=True)
        }
        self.last = torch.cat(self.views).numpy()
        self.theta = self.last.astype(np.float64)
        ((self.loss, self.grad),) = self.evaluate([self.theta])

    def evaluate(self, thetas: list[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        mode = _evaluation_mode(self.model, "batch") if self.guarantees else nullcontext()
        out = []
        with mode, self.places.lent(self.leaves):
            for theta in thetas:
                self.flat.copy_(torch.from_numpy(theta))
                loss = nn.functional.cross_entropy(self.model(self.x), self.y)
                grads = torch.autograd.grad(loss, list(self.leaves.values()))
                out.append((float(loss.detach()), flatten_dense_tensors(grads).double().numpy()))
        return out

    def end(self) -> float:
        self.last = torch.cat(self.views).numpy()
        theta = self.last.astype(np.float64)
        delta = theta - self.theta
        (_, mid), (loss, grad) = self.evaluate([self.theta + 0.5 * delta, theta])
        mean = mid * 4
        mean += self.grad
        mean += grad
        lca = delta * (mean / 6)
        residual = (loss - self.loss) - lca.sum()
        self.layout.reduce_by_layer(lca)
        if self.guarantees:
            sign_counts(lca, self.layout)
        self.theta, self.loss, self.grad = theta, loss, grad
        return residual

    def begin(self) -> None:
        if not (torch.cat(self.views).numpy() == self.last).all():
            raise RuntimeError("the parameters changed between steps")


def measure_floor(x_np: np.ndarray, y_np: np.ndarray, steps: int) -> list[list[str]]:
    """The bare step without and with the guarantees, and lca's, interleaved on three
    copies of the digits MLP (each step: a hand-written pass, then each one's training
    step and LCA step), so that all three ratios see the same machine; :data:`REPEATS`
    blocks of ``steps`` steps give each ratio's spread."""
    torch.manual_seed(0)
    base = mlp((64, 100, 50, 10))
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    copies = [copy.deepcopy(base) for _ in range(3)]
    steppers: list[Any] = [
        BareStep(copies[0], x, y, guarantees=False),
        BareStep(copies[1], x, y, guarantees=True),
        Tracker(copies[2], nn.CrossEntropyLoss(), (x, y), batch_size=4096),
    ]
    steppers[2].begin()
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in copies]
    reference = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    blocks: list[list[dict[str, float]]] = [[], [], []]
    for _ in range(REPEATS):
        hand: list[float] = []
        times: list[list[float]] = [[], [], []]
        for step in range(steps):
            idx = torch.randint(0, len(y), (250,), generator=gen)
            for i in np.roll(np.arange(3), step):  # each goes first as often as the others
                hand.append(timed_pass(reference, x, y, 4096))
                loss_fn = nn.functional.cross_entropy
                seconds, _ = tracked_step(copies[i], opts[i], loss_fn, x, y, idx, steppers[i])
                times[i].append(seconds)
        for i, t in enumerate(times):
            blocks[i].append(timings(hand, t, [2] * len(t), warmup=0))
    names = [
        "digits MLP: a bare step, no guarantees (reference)",
        "digits MLP: a bare step with lca's guarantees (reference)",
        "digits MLP: lca, beside the two references",
    ]
    return [ratio_row(name, runs) for name, runs in zip(names, blocks, strict=True)]


def run(quick: bool = False) -> tuple[str, list[str], list[list[str]], str]:
    steps = 10 if quick else 40
    rows = ratio_rows(measure, quick, steps)
    x, y = cases(quick)[0][2:]
    rows += measure_floor(x, y.astype(np.int64), steps)
    notes = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
        f"median of {steps} steps. 'ratio' = median LCA step ÷ (mean passes per step × "
        f"median pass), goal ≤ 1.10: the median of {REPEATS} measurements (each case a fresh "
        "model and tracker), and their range. The references are the least a Simpson step "
        "can do (`BareStep`): their ratio is the floor on this machine, without and with what "
        "lca guarantees (flags and RNG restored, helped / hurt counts); measured in one loop "
        f"with lca's, three models in one process, in {REPEATS} blocks of {steps} steps."
    )
    return (
        "PyTorch: LCA step vs two hand-written gradient passes",
        HEADER,
        rows,
        notes,
    )
