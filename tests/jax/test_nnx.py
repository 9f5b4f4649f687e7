"""flax nnx models, tracked as flax now recommends writing them: the model itself, updated in
place by ``nnx.Optimizer`` inside ``with tracker.step()``; layers named by module path."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lca_core
from lca_core import open_run
from lca_core.errors import AccuracyWarning

nnx = pytest.importorskip("flax.nnx")
from lca_jax import JaxBackend, Tracker  # noqa: E402


class CNN(nnx.Module):
    """Conv → LayerNorm → strided conv → linear head, on 16×16×3 inputs."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.down = nnx.Conv(8, 8, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.down(jax.nn.relu(self.norm(self.conv(x)))))
        return self.head(h.reshape(h.shape[0], -1))


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


def data(n: int = 256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16, 16, 3)).astype(np.float32)
    y = (x.reshape(n, -1) @ rng.normal(size=(16 * 16 * 3, 10))).argmax(1).astype(np.int32)
    return x, y


def test_an_nnx_cnn_trained_with_adamw_is_allocated_within_its_budget(tmp_path):
    x, y = data()
    model = CNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)
    tracker = Tracker(loss_fn, model, (x, y), tmp_path / "run", store_trajectory=True)
    assert tracker.backend.layout.layers == ("conv", "down", "head", "norm")
    before = jax.tree.map(jnp.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    rng = np.random.default_rng(1)
    for _ in range(6):
        idx = rng.integers(0, len(x), 32)
        grads = nnx.grad(lambda m, idx=idx: loss_fn(m, x[idx], y[idx]).mean())(model)
        with tracker.step():
            optimizer.update(model, grads)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        summary = tracker.close()
    assert summary.budget_used <= summary.budget and summary.unconverged_steps == 0
    # the model is the user's: lca evaluated copies of it, training moved it
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert not np.allclose(after["head"]["kernel"], before["head"]["kernel"])
    run, backend = open_run(tmp_path / "run"), JaxBackend(loss_fn, model, (x, y))
    for t in range(2):  # per layer, against a 64-panel Simpson oracle (float32 losses)
        oracle = lca_core.allocate(
            backend, run.theta(t), run.theta(t + 1), tol=1e-12, max_panels=64
        )
        assert np.abs(run.layer_lca[t] - oracle.result.layer_lca).sum() <= 1e-3


def test_a_live_nnx_state_as_the_point_before_a_step_is_refused_with_the_reason():
    x, y = data(64)
    model = CNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    tracker = Tracker(loss_fn, model, (x, y))
    live = nnx.state(model, nnx.Param)  # a view: the update below changes it too
    optimizer.update(model, nnx.grad(lambda m: loss_fn(m, x, y).mean())(model))
    with pytest.raises(TypeError, match="live view of the model"):
        tracker.update(live, nnx.state(model, nnx.Param))
