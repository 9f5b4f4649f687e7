import gc
import os
import socket
import subprocess
import sys
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lca_jax import JaxBackend, Tracker, allocate, full_pass, layout_of
from sklearn.datasets import load_digits

from lca_core import create_backend, open_run
from lca_core.arrays import to_host
from tests.checks import assert_every_step_within_tol
from tests.jax.conftest import init_mlp, make_step, mlp_loss, train


def test_layout_follows_key_paths():
    layout = layout_of(init_mlp())
    assert [p.name for p in layout.params][:2] == ["fc0/bias", "fc0/kernel"]
    assert layout.layers == ("fc0", "fc1", "fc2")
    assert layout.param("fc0/kernel").neuron_axis == 1  # (in, out): the last axis


def test_optax_mlp_residuals_within_tol_and_budget(digits, tmp_path):
    x, y = digits
    tracker = Tracker(
        mlp_loss,
        init_mlp(),
        (x, y),
        tmp_path / "run",
        per_class=True,
        val_data=(x[:100], y[:100]),
        store_params=True,
    )
    train(tracker, mlp_loss, init_mlp(), x, y, steps=30)
    summary = tracker.close()
    run = open_run(tmp_path / "run")
    assert_every_step_within_tol(run)
    assert summary.budget_used < 0.01 and summary.loss_change < -0.5
    # per-class parts add up to the total (float32 sums: tolerance of its rounding)
    np.testing.assert_allclose(
        run.array("class_layer_lca").sum(1), run.layer_lca, rtol=1e-4, atol=1e-7
    )
    assert run.layers == ["fc0", "fc1", "fc2"]


def test_no_recompilation_across_steps(digits):
    x, y = digits
    tracker = Tracker(mlp_loss, init_mlp(), (x, y), batch_size=128)
    train(tracker, mlp_loss, init_mlp(), x, y, steps=3)
    compiled = full_pass._cache_size()
    train(
        tracker.__class__(mlp_loss, init_mlp(), (x, y), batch_size=128),
        mlp_loss,
        init_mlp(),
        x,
        y,
        steps=6,
        seed=1,
    )
    assert full_pass._cache_size() == compiled  # same loss and shapes: nothing new compiled
    tracker.close()


def test_frozen_leaves_of_a_masked_optimizer_get_exactly_zero(digits, tmp_path):
    x, y = digits
    params = init_mlp()
    frozen = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "fc1", params)
    optimizer = optax.multi_transform({False: optax.sgd(0.1), True: optax.set_to_zero()}, frozen)
    tracker = Tracker(mlp_loss, params, (x, y), tmp_path / "run", store_params=True)
    train(tracker, mlp_loss, params, x, y, steps=5, optimizer=optimizer)
    tracker.close()
    run = open_run(tmp_path / "run")
    assert np.all(run.param_lca("fc1/kernel") == 0) and np.all(run.param_lca("fc1/bias") == 0)
    assert np.any(run.param_lca("fc0/kernel") != 0)
    dead = (x == 0).all(axis=0)  # always-black pixels: their input weights never learn
    assert np.all(run.param_lca("fc0/kernel")[:, dead, :] == 0)


def test_donating_steps_are_safe(digits):
    x, y = digits
    plain = train(None, mlp_loss, init_mlp(), x, y, steps=4)
    tracker = Tracker(mlp_loss, init_mlp(), (x, y))
    donated = train(tracker, mlp_loss, init_mlp(), x, y, steps=4, donate=True)
    tracker.close()
    assert tracker.allocator.steps == 4
    for a, b in zip(
        jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(donated), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # training unchanged
    fresh = Tracker(mlp_loss, init_mlp(), (x, y))
    step = make_step(mlp_loss, optax.sgd(0.1), donate=True)
    params = init_mlp()
    opt_state = optax.sgd(0.1).init(params)
    new, _ = step(params, opt_state, x[:50], y[:50])
    with pytest.raises(RuntimeError, match=r"tracker\.start"):
        fresh.update(params, new)


def test_functional_allocate_returns_a_pytree(digits):
    x, y = digits
    p0 = init_mlp()
    p1 = train(None, mlp_loss, p0, x, y, steps=3)
    out = allocate(mlp_loss, p0, p1, (x, y))
    assert jax.tree_util.tree_structure(out.lca) == jax.tree_util.tree_structure(p0)
    total = sum(float(np.sum(leaf)) for leaf in jax.tree_util.tree_leaves(out.lca))
    change = float(mlp_loss(p1, x, y).mean() - mlp_loss(p0, x, y).mean())
    assert total + out.residual == pytest.approx(change, abs=1e-5)
    assert abs(out.residual) <= 1e-3


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(-1, 8, 8, 1)
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(len(x), -1)
        return nn.Dense(10)(x)


def test_flax_cnn_training(digits, tmp_path):
    x, y = digits
    model = SmallCNN()
    params = model.init(jax.random.PRNGKey(0), x[:2])

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb)

    backend = create_backend(loss_fn, params, (x, y), backend="jax")
    assert isinstance(backend, JaxBackend)
    tracker = Tracker(loss_fn, params, (x, y), tmp_path / "run", store_params=True)
    train(tracker, loss_fn, params, x, y, steps=15, optimizer=optax.adam(1e-2))
    summary = tracker.close()
    run = open_run(tmp_path / "run")
    assert summary.budget_used < 0.01 and summary.loss_change < 0
    assert run.layers == ["params/Conv_0", "params/Dense_0"]
    assert run.param_lca("params/Conv_0/kernel").shape == (15, 3, 3, 1, 6)


def test_data_are_sharded_across_local_devices(tmp_path):
    """Two forced CPU devices: the chunks are split over both; results equal one device's.
    One device asked for (not the default one) holds the set, held or streamed."""
    code = """
import jax, numpy as np
from lca_jax import JaxBackend
from lca_core.arrays import to_host
from tests.jax.conftest import init_mlp, mlp_loss
from sklearn.datasets import load_digits
x, y = load_digits(return_X_y=True)
x, y = (x[:500] / 16).astype(np.float32), y[:500].astype(np.int32)
assert len(jax.local_devices()) == 2
two = JaxBackend(mlp_loss, init_mlp(), (x, y), batch_size=128)
one = JaxBackend(mlp_loss, init_mlp(), (x, y), batch_size=128, devices=jax.local_devices()[:1])
theta = to_host(two.snapshot().theta, np.float64)
a, b = two.evaluate([theta])[0], one.evaluate([theta])[0]
assert len(two.chunks("train", False).xs.sharding.device_set) == 2
np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
np.testing.assert_allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7)
on_mesh = two.evaluate([two.snapshot().theta])[0]  # device arithmetic: θ put on the mesh
np.testing.assert_allclose(to_host(on_mesh.grad), b.grad, rtol=1e-4, atol=1e-7)
second = jax.local_devices()[1]
for resident in (None, 1):
    other = JaxBackend(
        mlp_loss, init_mlp(), (x, y), batch_size=128, devices=[second], resident_bytes=resident
    )
    c = other.evaluate([theta])[0]
    np.testing.assert_allclose(c.loss, b.loss, rtol=1e-6)
    np.testing.assert_allclose(c.grad, b.grad, rtol=1e-4, atol=1e-7)
    if resident is None:
        assert other.chunks("train", False).xs.devices() == {second}
print("sharded ok")
"""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.getcwd(),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sharded ok" in out.stdout


def test_bad_input_is_explained(digits):
    x, y = digits
    from lca_core import EmptyEvaluationSetError

    with pytest.raises(EmptyEvaluationSetError, match="empty"):
        JaxBackend(mlp_loss, init_mlp(), (x[:0], y[:0]))
    with pytest.raises(ValueError, match="600 inputs but 5 targets"):
        JaxBackend(mlp_loss, init_mlp(), (x, y[:5]))
    tracker = Tracker(mlp_loss, init_mlp(), (x, y))
    params = train(tracker, mlp_loss, init_mlp(), x, y, steps=1)
    moved = jax.tree_util.tree_map(lambda a: a * 0.5, params)
    with pytest.raises(RuntimeError, match="changed between two tracked optimizer steps"):
        tracker.update(moved, params)


def test_the_last_steps_own_arrays_are_not_compared_again_nor_kept_alive(digits):
    """params_before that holds the very arrays of the last params_after cannot have
    changed (JAX arrays are immutable): they are not read back to the host again. An equal
    copy is read and compared, and the tracker holds no reference that keeps arrays alive."""
    x, y = digits
    tracker = Tracker(mlp_loss, init_mlp(), (x, y))
    reads = []
    read = tracker.flatten
    tracker.flatten = lambda params: reads.append(params) or read(params)
    params = train(tracker, mlp_loss, init_mlp(), x, y, steps=3)
    assert len(reads) == 1 + 3  # θ_0, then each step's params_after only
    copied = jax.tree_util.tree_map(jnp.copy, params)
    tracker.update(copied, jax.tree_util.tree_map(lambda a: a * 0.999, params))
    assert reads[-2] is copied  # compared: not the same arrays
    leaf = weakref.ref(jax.tree_util.tree_leaves(params)[0])
    reads.clear()
    del params, copied
    gc.collect()
    assert leaf() is None


def test_importing_lca_jax_imports_no_other_framework():
    code = "import sys, lca_jax; print(sorted({'torch','tensorflow','keras'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_auto_detection_tells_a_jax_loss_from_a_numpy_function(digits):
    x, y = digits
    from lca_core import FunctionBackend

    assert isinstance(create_backend(mlp_loss, init_mlp(), (x, y)), JaxBackend)
    numpy_loss = lambda theta: (float(theta @ theta), 2 * theta)  # noqa: E731
    assert isinstance(create_backend(numpy_loss, np.ones(3)), FunctionBackend)


MULTI_PROCESS = """
import os, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
rank, port, store, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
resume = mode == "resume"
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank)
import numpy as np
from lca_core import DistributedError
from lca_jax import Tracker
from tests.jax.conftest import init_mlp, mlp_loss
from sklearn.datasets import load_digits
x, y = load_digits(return_X_y=True)
x, y = (x[:500] / 16).astype(np.float32), y[:500].astype(np.int32)
assert jax.process_count() == 2 and len(jax.devices()) == 2
params = init_mlp()
tracker = None
for step in range(6 if resume else 4):  # resumed: the last 2 steps, onto the first 4
    if tracker is None and (step == 4 or not resume):
        tracker = Tracker(
            mlp_loss, params, (x, y), store, batch_size=128, progress=False, resume=resume
        )
    grads = jax.grad(lambda p: mlp_loss(p, x, y).mean())(params)
    new = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    if mode == "die" and step == 2 and rank == 1:
        os._exit(3)  # process 1 dies; process 0 is evaluating the step
    if tracker is not None:
        try:
            tracker.update(params, new)
        except DistributedError as exc:
            print("DistributedError", exc, flush=True)
            os._exit(0)  # JAX's coordination service would abort this process at exit
    params = new
summary = tracker.close()
print("rank", rank, "writes", tracker.backend.writes, "sum", repr(summary.sum_lca),
      "last", tracker.last.step)
"""


def _two_processes(store: str, mode: str = "train") -> list[tuple[int, str, str]]:
    """Run MULTI_PROCESS as processes 0 and 1 of a job ("train", "resume" a run, or "die":
    process 1 exits at step 2); their exit codes and outputs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_PROCESS, str(rank), port, store, mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outs, strict=True)]


def _last_lines(runs: list[tuple[int, str, str]]) -> list[list[str]]:
    """The last line each process printed, split; both must have succeeded."""
    assert [code for code, _, _ in runs] == [0, 0], runs[0][2][-2000:] + runs[1][2][-2000:]
    return [out.strip().splitlines()[-1].split() for _, out, _ in runs]


def test_two_jax_processes_shard_over_a_global_mesh(tmp_path):
    """jax.distributed with two CPU processes (gloo collectives): one run, written by
    process 0, equal to what one process computes."""
    store = str(tmp_path / "run")
    lines = _last_lines(_two_processes(store))
    assert lines[0][3] == "True" and lines[1][3] == "False"  # process 0 alone writes
    assert lines[0][5] == lines[1][5]  # the same allocation in both processes
    x, y = load_digits(return_X_y=True)
    x, y = (x[:500] / 16).astype(np.float32), y[:500].astype(np.int32)
    run = open_run(store)
    assert run.steps == 4 and run.metadata["policy"]["processes"] == 2
    params, thetas = init_mlp(), []
    tracker = Tracker(mlp_loss, params, (x, y), batch_size=128, progress=False)
    for _ in range(4):
        grads = jax.grad(lambda p: mlp_loss(p, x, y).mean())(params)
        new = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
        thetas.append(tracker.update(params, new).layer_lca)
        params = new
    np.testing.assert_allclose(run.layer_lca, np.array(thetas), rtol=1e-4, atol=1e-7)


def test_a_resumed_job_continues_the_run_in_every_process(tmp_path):
    """Only process 0 opens the store; process 1 takes the resumed run's state from it, so
    both number the steps alike and summarise the whole run."""
    store = str(tmp_path / "run")
    _last_lines(_two_processes(store))
    lines = _last_lines(_two_processes(store, "resume"))
    assert lines[0][5] == lines[1][5] and lines[0][7] == lines[1][7] == "5"
    run = open_run(store)
    assert run.steps == 6
    assert float(lines[1][5]) == pytest.approx(run.summary().sum_lca, rel=1e-12)


def test_a_process_dying_stops_the_job_with_an_lca_error_and_a_whole_run(tmp_path):
    """As under torch.distributed: the collective that loses its peer is a
    DistributedError in the process left, and the run keeps its committed steps."""
    store = str(tmp_path / "run")
    (code0, out0, err0), (code1, _, _) = _two_processes(store, "die")
    assert code1 == 3
    assert code0 == 0 and "DistributedError" in out0, err0[-2000:]
    assert "Another process of the job has stopped" in out0
    run = open_run(store)  # validated on open: not corrupt
    assert run.steps == 2 and np.isfinite(run.layer_lca).all()


def test_bfloat16_parameters_are_summed_in_float32(digits):
    """Thirty chunks of a bfloat16 model: each chunk's gradient is the model's (bfloat16),
    their sums are float32 — in bfloat16 every sum would be rounded to 8 bits, and the
    per-example weights 1/N with it."""
    x, y = digits
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), init_mlp())
    backend = JaxBackend(mlp_loss, params, (x, y), batch_size=20)
    assert backend.policy()["reduction"] == "Kahan-compensated float32"
    (ev,) = backend.evaluate([to_host(backend.snapshot().theta, np.float64)])
    as_bfloat16 = ev.grad.astype(jnp.bfloat16).astype(np.float64)
    assert np.mean(as_bfloat16 == ev.grad) < 0.5  # most entries need more than 8 bits
    assert float(np.float32(ev.loss).astype(jnp.bfloat16)) != ev.loss
    reference = jax.grad(lambda p: mlp_loss(p, x, y).astype(jnp.float32).mean())(params)
    flat = np.concatenate(
        [np.asarray(g, np.float64).ravel() for g in jax.tree_util.tree_leaves(reference)]
    )
    np.testing.assert_allclose(ev.grad, flat, rtol=0.05, atol=0.02 * np.abs(flat).max())


@pytest.mark.parametrize("batch_size", [4096, 3], ids=["one_chunk", "chunks"])
def test_a_subsets_groups_are_evaluated_together_as_one_by_one(digits, batch_size):
    """Groups of equal size are vmapped, each scanning its own chunks: the same sums as
    the scan over every group's chunks in turn."""
    x, y = digits
    backend = JaxBackend(mlp_loss, init_mlp(), (x, y), batch_size=batch_size)
    backend.use_subset(160, seed=4)
    chunks = backend.chunks("train", True)
    assert chunks.stacked and chunks.groups == 16
    theta = backend.snapshot().theta
    together = backend.evaluate([theta], per_class=True)[0]
    backend._chunks[("train", True)] = chunks._replace(stacked=False)
    in_turn = backend.evaluate([theta], per_class=True)[0]
    np.testing.assert_allclose(together.class_grads, in_turn.class_grads, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(together.class_losses, in_turn.class_losses, rtol=1e-6)
    # classes spanning unequal numbers of chunks are scanned in turn
    skewed = np.where(np.arange(len(y)) < len(y) // 2, 0, y)
    per_class = JaxBackend(mlp_loss, init_mlp(), (x, skewed), batch_size=16)
    assert not per_class.chunks("train", True).stacked
