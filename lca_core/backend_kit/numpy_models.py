"""Small models with analytic gradients in plain numpy.

They let the core be tested, benchmarked and demonstrated without any framework, and act
as an independent witness when the framework backends are checked against each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import Layout, ParamSpec


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer labels and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_p[np.arange(n), y].mean()
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1.0
    return float(loss), d / n


@dataclass(frozen=True)
class MLP:
    """A fully connected classifier; weights are (out, in) like ``torch.nn.Linear``."""

    sizes: tuple[int, ...]
    activation: str = "tanh"

    @property
    def layout(self) -> Layout:
        specs = []
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            specs.append(ParamSpec(f"fc{i}.weight", (n_out, n_in), "float64", f"fc{i}", 0))
            specs.append(ParamSpec(f"fc{i}.bias", (n_out,), "float64", f"fc{i}", 0))
        return Layout(tuple(specs))

    def init(self, seed: int = 0) -> np.ndarray:
        """Flat parameters, uniform ±1/√fan_in as PyTorch initialises Linear layers."""
        rng = np.random.default_rng(seed)
        parts = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = 1.0 / np.sqrt(n_in)
            parts += [rng.uniform(-bound, bound, n_out * n_in), rng.uniform(-bound, bound, n_out)]
        return np.concatenate(parts)

    def _act(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.activation == "tanh":
            a = np.tanh(h)
            return a, 1.0 - a * a
        if self.activation == "relu":
            return np.maximum(h, 0.0), (h > 0).astype(h.dtype)
        raise ValueError(f"activation must be 'tanh' or 'relu', not {self.activation!r}")

    def loss_and_grad(
        self, theta: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Mean cross-entropy over (x, y) and its gradient, flat in layout order."""
        params = self.layout.split(np.asarray(theta, dtype=np.float64))
        n_layers = len(self.sizes) - 1
        acts, derivs = [np.asarray(x, dtype=np.float64)], []
        for i in range(n_layers):
            h = acts[-1] @ params[f"fc{i}.weight"].T + params[f"fc{i}.bias"]
            if i == n_layers - 1:
                acts.append(h)
            else:
                a, da = self._act(h)
                acts.append(a)
                derivs.append(da)
        loss, d = softmax_cross_entropy(acts[-1], np.asarray(y))
        grads: dict[str, np.ndarray] = {}
        for i in reversed(range(n_layers)):
            grads[f"fc{i}.weight"] = d.T @ acts[i]
            grads[f"fc{i}.bias"] = d.sum(axis=0)
            if i:
                d = (d @ params[f"fc{i}.weight"]) * derivs[i - 1]
        return loss, np.concatenate([grads[p.name].ravel() for p in self.layout.params])
