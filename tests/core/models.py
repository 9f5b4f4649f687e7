"""Numpy losses with analytic gradients, used across the core tests."""

import numpy as np

from lca_core import FunctionBackend, Splitter, Tracker
from lca_core.backend_kit.numpy_models import MLP


def cubic(seed: int, k: int):
    """L(θ) = ½θᵀAθ + bᵀθ + Σ c_i θ_i³ — Simpson integrates its gradient exactly."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(k, k))
    a, b, c = m @ m.T / k, rng.normal(size=k), rng.normal(size=k) / 3

    def loss_and_grad(theta):
        return 0.5 * theta @ a @ theta + b @ theta + c @ theta**3, a @ theta + b + 3 * c * theta**2

    return loss_and_grad


def linear(seed: int, k: int):
    b = np.random.default_rng(seed).normal(size=k)
    return lambda theta: (float(b @ theta), b.copy())


def logistic_data(seed: int, n: int = 200, d: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def logistic(theta, x, y):
    """Mean logistic loss of a linear model with bias (last coordinate)."""
    z = x @ theta[:-1] + theta[-1]
    p = 1.0 / (1.0 + np.exp(-z))
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    r = (p - y) / len(y)
    return float(loss), np.concatenate([x.T @ r, [r.sum()]])


def sgd(loss_and_grad, theta, lr, steps, *args):
    """A plain gradient-descent trajectory θ_0…θ_steps."""
    out = [theta.copy()]
    for _ in range(steps):
        theta = theta - lr * loss_and_grad(theta, *args)[1]
        out.append(theta.copy())
    return out


def digits_like(seed: int = 0, n: int = 300, d: int = 16, classes: int = 4):
    """Gaussian blobs: a small classification set with integer labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


class HeavyBall(Splitter):
    """A numpy SGD with torch's semantics (momentum μ, dampening d, weight decay λ) whose
    state is a value, the momentum buffer b: Δ = −lr(μ b + (1−d)(g + λθ))."""

    name = "test.HeavyBall"

    def __init__(self, lr, mu=0.0, damp=0.0, wd=0.0):
        self.lr, self.mu, self.damp, self.wd = lr, mu, damp, wd

    def step(self, theta, grad, b):
        b = self.mu * b + (1 - self.damp) * (grad + self.wd * theta)
        return theta - self.lr * b, b

    def before(self, theta, state=None):
        self.theta, self.b = theta, state

    def after(self, state=None):
        decay = -self.lr * (1 - self.damp) * self.wd * self.theta
        momentum = -self.lr * self.mu * self.b
        gradient = -self.lr * (state - self.mu * self.b) - decay  # from the states alone
        return {"momentum": momentum, "weight_decay": decay, "gradient": gradient}


def momentum_run(opt, store=None, steps=6, after=lambda t: t, val=False, split=True, **options):
    """A 16-8-4 tanh MLP on blobs trained by ``opt`` (a :class:`HeavyBall`), tracked with
    ``options`` and split by the optimizer's parts unless ``split=False``; ``after`` may
    change each step's result. Returns the allocated steps and the layout."""
    x, y = digits_like(3, n=240)
    mlp = MLP((16, 8, 4), activation="tanh")
    theta = mlp.init(2)
    backend = FunctionBackend(
        mlp.loss_and_grad,
        theta,
        layout=mlp.layout,
        data=(x, y),
        val_data=digits_like(5, n=120) if val else None,
    )
    tracker = Tracker(backend, store, optimizer=opt if split else None, **options)
    b = np.zeros_like(theta)
    results = []
    for i in range(steps):
        rows = slice(40 * i % 240, 40 * i % 240 + 40)
        grad = mlp.loss_and_grad(theta, x[rows], y[rows])[1]
        new, b_new = opt.step(theta, grad, b)
        new = after(new)
        states = (b, b_new) if split else None
        results.append(tracker.update(theta, new, opt_state=states))
        theta, b = new, b_new
    tracker.close()
    return [r for r in results if r is not None], mlp.layout


__all__ = [
    "MLP",
    "HeavyBall",
    "cubic",
    "digits_like",
    "linear",
    "logistic",
    "logistic_data",
    "momentum_run",
    "sgd",
]


def with_validation(mlp: MLP, theta, x, y, n_train: int = 150) -> FunctionBackend:
    """``mlp`` on its first ``n_train`` examples, the rest held out as the validation set."""
    return FunctionBackend(
        mlp.loss_and_grad,
        theta,
        data=(x[:n_train], y[:n_train]),
        val_data=(x[n_train:], y[n_train:]),
        layout=mlp.layout,
    )
