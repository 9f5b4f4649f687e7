"""Splitting torch optimizers' updates into gradient, momentum and weight-decay parts.

Read around ``optimizer.step()``: the momentum buffers and θ_t before, the state the step
left after (Adam's second moment and step count). The gradient is read after the step,
so it is the one the optimizer used: clipped, unscaled by ``GradScaler``, accumulated.
Formulas: docs/concepts.md, "The optimizer's parts". Register another optimizer with
``lca_torch.splitters.SPLITTERS.register(MyOptimizer, factory)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lca_core.backend_kit.splitters import (
    Parts,
    Splitter,
    SplitterRegistry,
    flat,
    pieces,
    public_name,
)
from lca_core.errors import UnsupportedOptimizerError

SPLITTERS = SplitterRegistry(
    "PyTorch", "lca_torch.splitters.SPLITTERS.register(MyOptimizer, factory)"
)


def _host(t: torch.Tensor | None) -> np.ndarray | None:
    """A float64 host copy (never a view: the optimizer updates its state in place)."""
    return None if t is None else t.detach().to("cpu", torch.float64, copy=True).numpy().ravel()


def _value(x: Any) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


class TorchSplitter(Splitter):
    """What every torch optimizer's splitter shares: each parameter's group and state,
    read before and after the step, parts joined in the layout's order. A parameter the
    optimizer does not hold, or one without a gradient, is not moved: its parts are 0."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]):
        self.optimizer, self.params = optimizer, list(params)
        self.name = public_name(type(optimizer))
        owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.groups = [owner.get(id(p)) for p in self.params]
        for g in optimizer.param_groups:
            if g.get("maximize"):
                raise UnsupportedOptimizerError(
                    f"{self.name} with maximize=True ascends the loss; lca splits descent only"
                )

    def before(self, theta: np.ndarray, state: Any = None) -> None:
        self.theta = theta
        self.start = [
            None if g is None else self.read_before(p, g, self.optimizer.state.get(p, {}))
            for p, g in zip(self.params, self.groups, strict=True)
        ]

    def after(self, state: Any = None) -> Parts:
        names = ("momentum", "weight_decay", "gradient")
        found: dict[str, list[np.ndarray]] = {n: [] for n in names}
        thetas = pieces(self.theta, (p.numel() for p in self.params))
        for p, g, start, theta in zip(self.params, self.groups, self.start, thetas, strict=True):
            grad = _host(p.grad)
            if g is None or grad is None:
                for n in names:
                    found[n].append(np.zeros(p.numel()))
                continue
            parts = self.split(start, self.optimizer.state[p], g, theta, grad)
            for n in names:
                found[n].append(parts[n])
        return {n: flat(found[n], self.theta.size) for n in names}

    def read_before(self, p: torch.Tensor, group: dict, state: dict) -> Any:
        """What the split of ``p`` needs from before the step."""
        raise NotImplementedError

    def split(
        self, start: Any, state: dict, group: dict, theta: np.ndarray, grad: np.ndarray
    ) -> dict[str, np.ndarray]:
        """One parameter's parts from its state before (``start``) and after."""
        raise NotImplementedError


class SGDSplitter(TorchSplitter):
    """torch.optim.SGD: b_t = μ b_{t−1} + (1−d) g', g' = g + λθ (b_1 = g'); the step is
    −lr·b_t, or −lr·(g' + μ b_t) with Nesterov. Each term's coefficient is read off that."""

    def read_before(self, p: torch.Tensor, group: dict, state: dict) -> Any:
        return _value(group["lr"]), _host(state.get("momentum_buffer"))

    def split(self, start, state, group, theta, grad):  # type: ignore[no-untyped-def]
        lr, buffer = start
        mu, d, wd = group["momentum"], group["dampening"], group["weight_decay"]
        nesterov = group["nesterov"]
        momentum = np.zeros_like(theta)
        if mu == 0:
            c = 1.0
        elif buffer is None:  # the first step: b_1 = g'
            c = 1.0 + mu if nesterov else 1.0
        else:
            c = 1.0 + mu * (1.0 - d) if nesterov else 1.0 - d
            momentum = -lr * (mu * mu if nesterov else mu) * buffer
        return {
            "momentum": momentum,
            "weight_decay": -lr * c * wd * theta,
            "gradient": -lr * c * grad,
        }


class AdamSplitter(TorchSplitter):
    """torch.optim.Adam / AdamW: with P_t = −lr / ((1−β1^t)(√v_t/√(1−β2^t) + ε)) the step is
    P_t(β1 m_{t−1} + (1−β1) g'), plus −lr·λ·θ_t when the decay is decoupled (AdamW)."""

    def read_before(self, p: torch.Tensor, group: dict, state: dict) -> Any:
        m = _host(state.get("exp_avg"))
        return _value(group["lr"]), np.zeros(p.numel()) if m is None else m

    def split(self, start, state, group, theta, grad):  # type: ignore[no-untyped-def]
        lr, m_prev = start
        b1, b2 = group["betas"]
        wd, eps = group["weight_decay"], group["eps"]
        t = _value(state["step"])
        v = _host(state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"])
        precond = -lr / ((1 - b1**t) * (np.sqrt(v) / np.sqrt(1 - b2**t) + eps))
        decoupled = group.get(
            "decoupled_weight_decay", isinstance(self.optimizer, torch.optim.AdamW)
        )
        # AdamW: θ ← θ(1 − lr·λ); Adam's L2: λθ is in the gradient the moments see
        decay = -lr * wd * theta if decoupled else precond * (1 - b1) * wd * theta
        return {
            "momentum": precond * b1 * m_prev,
            "weight_decay": decay,
            "gradient": precond * (1 - b1) * grad,
        }


class RMSpropSplitter(TorchSplitter):
    """torch.optim.RMSprop: with P_t = −lr / (√(v_t − ḡ_t²·[centered]) + ε) the step is
    P_t g' (no momentum) or −lr·b_t, b_t = μ b_{t−1} + g'/(√· + ε); g' = g + λθ."""

    read_before = SGDSplitter.read_before  # the learning rate and the momentum buffer

    def split(self, start, state, group, theta, grad):  # type: ignore[no-untyped-def]
        lr, buffer = start
        mu, wd = group["momentum"], group["weight_decay"]
        v = _host(state["square_avg"])
        if group["centered"]:
            v = v - _host(state["grad_avg"]) ** 2
        precond = -lr / (np.sqrt(v) + group["eps"])
        carried = np.zeros_like(theta) if buffer is None or not mu else -lr * mu * buffer
        return {
            "momentum": carried,
            "weight_decay": precond * wd * theta,
            "gradient": precond * grad,
        }


SPLITTERS.register(torch.optim.SGD, SGDSplitter)
SPLITTERS.register(torch.optim.RMSprop, RMSpropSplitter)
SPLITTERS.register(torch.optim.Adam, AdamSplitter)
SPLITTERS.register(torch.optim.AdamW, AdamSplitter)


def make_splitter(optimizer: Any, params: Sequence[torch.Tensor]) -> Splitter:
    """The splitter of a torch optimizer over the tracked parameters (layout order); a
    wrapper that holds the optimizer as ``.optimizer`` (Accelerate's, Lightning's) is
    split as the optimizer it wraps."""
    while not SPLITTERS.knows(optimizer):
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return SPLITTERS.make(optimizer, params=params)
