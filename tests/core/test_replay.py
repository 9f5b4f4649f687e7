import numpy as np
import pytest

from lca_core import Allocator, FunctionBackend, open_run, replay
from lca_core.backend_kit.numpy_models import MLP
from lca_core.protocol import Snapshot
from tests.core.models import digits_like, sgd


def setup():
    x, y = digits_like(3)
    mlp = MLP((16, 8, 4))
    traj = sgd(mlp.loss_and_grad, mlp.init(1), 0.3, 9, x, y)
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    return backend, traj


def record(path, backend, traj):
    """Record-only: the trajectory, no gradient passes."""
    from lca_core.storage.store import RunWriter, array_specs

    writer = RunWriter(
        path, backend.layout, array_specs(backend.layout, store_trajectory=True, lca=False)
    )
    writer.start("trajectory", {"theta": traj[0]})
    for theta in traj[1:]:
        writer.append("trajectory", {}, {"theta": theta})
    writer.close()


def test_replay_equals_online_allocation_and_resumes(tmp_path):
    backend, traj = setup()
    online = Allocator(backend, tmp_path / "online")
    online.start(traj[0])
    for theta in traj[1:]:
        online.advance(theta)
    online.close()

    record(tmp_path / "rec", backend, traj)
    assert open_run(tmp_path / "rec").recorded_steps == 9
    # replay part of it, as if interrupted, then run replay again to finish
    partial = Allocator(backend, tmp_path / "rec", resume=True)
    partial.start(Snapshot(open_run(tmp_path / "rec").theta(0)))
    for t in range(1, 5):
        partial.advance(open_run(tmp_path / "rec").theta(t), step_index=t - 1)
    partial.close()
    summary = replay(tmp_path / "rec", backend, progress=False)
    assert summary.steps == 9

    a, b = open_run(tmp_path / "online"), open_run(tmp_path / "rec")
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-12)
    np.testing.assert_allclose(b.layer_lca, a.layer_lca, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(b.step_index, np.arange(9))
    assert summary.sum_lca == pytest.approx(a.summary().sum_lca, rel=1e-9)


def test_replay_needs_a_trajectory(tmp_path):
    backend, traj = setup()
    alloc = Allocator(backend, tmp_path / "run")
    alloc.start(traj[0])
    alloc.close()
    with pytest.raises(ValueError, match="store_trajectory=True"):
        replay(tmp_path / "run", backend)


@pytest.mark.parametrize("resample", [False, True], ids=["fixed", "resampled"])
def test_replay_takes_a_subset_as_a_tracker_does(tmp_path, resample):
    """``eval_subset`` (and ``resample``) given to replay evaluate the recorded trajectory
    on the subset a tracker would have used: the same allocation as live."""
    backend, traj = setup()
    backend.use_subset(64, resample="shared" if resample else None)
    live = Allocator(backend, tmp_path / "live")
    live.start(traj[0])
    for theta in traj[1:]:
        live.advance(theta)
    live.close()
    fresh, _ = setup()
    record(tmp_path / "rec", fresh, traj)
    summary = replay(tmp_path / "rec", fresh, eval_subset=64, resample=resample, progress=False)
    a, b = open_run(tmp_path / "live"), open_run(tmp_path / "rec")
    assert b.config["eval_subset"] == a.config["eval_subset"]
    np.testing.assert_allclose(b.layer_lca, a.layer_lca, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(b.layer_lca_stderr, a.layer_lca_stderr, rtol=1e-9)
    assert (summary.run_check is not None) == resample
