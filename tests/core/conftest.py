"""Shared fixtures of the core tests."""

import pytest

from lca_core import Allocator
from lca_core.backend_kit.numpy_models import MLP
from tests.core.models import digits_like, sgd, with_validation


@pytest.fixture(scope="session")
def run_path(tmp_path_factory):
    """A small real run with every optional array stored, chunked finely for streaming."""
    path = tmp_path_factory.mktemp("analysis") / "run"
    x, y = digits_like(5, n=200)
    mlp = MLP((16, 10, 4), activation="relu")
    traj = sgd(mlp.loss_and_grad, mlp.init(3), 0.4, 30, x[:150], y[:150])
    backend = with_validation(mlp, traj[0], x, y)
    alloc = Allocator(
        backend,
        path,
        store_params=True,
        store_grads=True,
        store_trajectory=True,
        per_class=True,
        validation=True,
    )
    alloc.start(traj[0])
    for theta in traj[1:]:
        alloc.advance(theta)
    alloc.close()
    return path
