"""Shared fixtures of the core tests."""

import numpy as np
import pytest

from lca_core import Allocator
from lca_core.backend_kit.numpy_models import MLP
from tests.core.models import HeavyBall, digits_like, with_validation


@pytest.fixture(scope="session")
def run_path(tmp_path_factory):
    """A small real run with every optional array stored, chunked finely for streaming,
    trained by SGD with momentum and weight decay and split by its parts."""
    path = tmp_path_factory.mktemp("analysis") / "run"
    x, y = digits_like(5, n=200)
    mlp = MLP((16, 10, 4), activation="relu")
    opt = HeavyBall(0.3, 0.5, wd=1e-3)
    theta = mlp.init(3)
    buffer = np.zeros_like(theta)
    traj, parts = [theta], []
    for _ in range(30):
        grad = mlp.loss_and_grad(theta, x[:150], y[:150])[1]
        opt.before(theta, buffer)
        theta, buffer = opt.step(theta, grad, buffer)
        parts.append(opt.after(buffer))
        parts[-1].pop("gradient")
        traj.append(theta)
    backend = with_validation(mlp, traj[0], x, y)
    alloc = Allocator(
        backend,
        path,
        store_params=True,
        store_grads=True,
        store_trajectory=True,
        per_class=True,
        validation=True,
        split_by=opt.name,
    )
    alloc.start(traj[0])
    for theta, step_parts in zip(traj[1:], parts, strict=True):
        alloc.advance(theta, parts=step_parts)
    alloc.close()
    return path
