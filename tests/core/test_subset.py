"""Subset LCA: a seeded, class-stratified subset with a standard error per layer."""

import itertools
import tracemalloc

import numpy as np
import pytest
from scipy import stats

from lca_core import Allocator, FunctionBackend, Tracker, open_run
from lca_core.backend_kit.evaluation_data import subset_index
from lca_core.backend_kit.numpy_models import MLP
from lca_core.engine.quadrature import nodes, weights
from lca_core.engine.uncertainty import group_stderr
from tests.core.models import digits_like, sgd


def mlp_problem():
    x, y = digits_like(2, n=1200)
    mlp = MLP((16, 12, 4), activation="tanh")
    traj = sgd(mlp.loss_and_grad, mlp.init(1), 0.5, 12, x[:300], y[:300])
    return x, y, mlp, traj


def allocate(backend, traj, store):
    alloc = Allocator(backend, store)
    alloc.start(traj[0])
    for theta in traj[1:]:
        alloc.advance(theta)
    alloc.close()
    return open_run(store)


def test_the_subset_is_seeded_stratified_and_sized():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    a, b = subset_index(y, len(y), 40, seed=3), subset_index(y, len(y), 0.2, seed=3)
    np.testing.assert_array_equal(a, b)  # 40 examples = 20 % of 200
    assert len(set(a)) == 40 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(np.bincount(y[a]), [20, 10, 6, 4])  # the class shares
    assert not np.array_equal(a, subset_index(y, len(y), 40, seed=4))
    with pytest.raises(ValueError, match="eval_subset must be"):
        subset_index(y, len(y), 0)


def test_subset_intervals_cover_the_full_set_allocation(tmp_path):
    """On the same trajectory, the 95 % t-intervals of five subsets of 20 % cover the
    full-set per-layer LCA in at least 90 % of (step, layer) pairs; Σ A = ΔL of the subset
    holds exactly as for any evaluation set."""
    x, y, mlp, traj = mlp_problem()
    full = allocate(
        FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout),
        traj,
        tmp_path / "full",
    )
    covered, pairs = 0, 0
    for seed in range(5):
        backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
        backend.use_subset(0.2, seed=seed)
        run = allocate(backend, traj, tmp_path / f"subset{seed}")
        assert run.metadata["config"]["eval_subset"]["size"] == 240
        se = run.layer_lca_stderr
        assert se.shape == run.layer_lca.shape and np.all(se > 0)
        t = stats.t.ppf(0.975, run.metadata["config"]["eval_subset"]["groups"] - 1)
        covered += int((np.abs(run.layer_lca - full.layer_lca) <= t * se).sum())
        pairs += se.size
        np.testing.assert_allclose(run.layer_lca.sum(1), np.diff(run.losses), atol=1e-3)
    assert covered / pairs >= 0.9, covered / pairs


def test_eval_subset_is_a_tracker_option_and_costs_in_proportion(tmp_path):
    x, y, mlp, traj = mlp_problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    tracker = Tracker(backend, tmp_path / "run", eval_subset=120)
    tracker.start(traj[0])
    tracker.update(traj[0], traj[1])
    tracker.close()
    # every pass reads 112 examples, not 1200: 120 rounded down to 16 groups of 7
    assert len(backend.sets["train"][0]) == 112
    assert np.bincount(backend.group_of("train")).tolist() == [7] * 16
    assert open_run(tmp_path / "run").layer_lca_stderr.shape == (1, 2)
    other = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    with pytest.raises(ValueError, match="cannot be combined"):
        Tracker(other, eval_subset=120, per_class=True)


@pytest.mark.parametrize("tol", [1e-3, 1e-12])  # 1e-12: every step refined to max_panels
def test_subset_errors_are_those_of_the_groups_full_gradients(tol):
    """The groups' parts are summed as allocations by layer (G × layers): the standard
    errors equal those computed from every group's whole gradient at every node."""
    x, y, mlp, traj = mlp_problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    backend.use_subset(0.2, seed=1)
    alloc = Allocator(backend, tol=tol, max_panels=8, rule="auto")
    alloc.start(traj[0])
    panels = []
    for theta0, theta1 in itertools.pairwise(traj[:4]):
        result = alloc.advance(theta1)
        panels.append(result.panels)
        delta = theta1 - theta0
        rule = "trapezoid" if result.panels == 1 else "simpson"
        points = [theta1 if s == 1 else theta0 + s * delta for s in nodes(rule, result.panels)]
        groups = np.array([ev.class_grads for ev in backend.evaluate(points, per_class=True)])
        mean = np.tensordot(weights(rule, result.panels), groups, axes=1)  # (G, K)
        expected = group_stderr(mlp.layout.reduce_by_layer(mean * delta), backend.subset)
        np.testing.assert_allclose(result.layer_lca_stderr, expected, rtol=1e-9, atol=1e-15)
    # refined to max_panels / some step on its first try (the first is refined for the
    # run's budget: its residual is a large share of its own loss change)
    assert panels == [8, 8, 8] if tol < 1e-9 else min(panels) <= 2


def test_a_subset_step_holds_one_nodes_group_gradients_not_every_nodes():
    """Interior nodes' group gradients are mapped to G × layers as they arrive, one node
    at a time: a step's new host memory peaks near one G × K array (its end point, kept
    for the next step), however many nodes it evaluates. Mapping them after the whole
    round held one G × K per node: 3.3 G × K for Simpson's two, 29 at 32 panels."""
    x, y = digits_like(2, n=1200)
    mlp = MLP((16, 3000, 4), activation="tanh")  # K = 60k: the G × K arrays dominate
    traj = sgd(mlp.loss_and_grad, mlp.init(1), 0.5, 3, x[:300], y[:300])
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    backend.use_subset(0.5, seed=1)
    alloc = Allocator(backend, max_panels=32)
    alloc.start(traj[0])
    group_grads = backend.subset["groups"] * mlp.layout.size * 8
    peaks = {}
    for theta in traj[1:]:
        tracemalloc.start()
        try:
            panels = alloc.advance(theta).panels
            peaks[panels] = tracemalloc.get_traced_memory()[1] / group_grads
        finally:
            tracemalloc.stop()
    assert set(peaks) == {2, 32}, peaks  # a first try and a step refined four times
    assert peaks[2] < 2 and peaks[32] < 6, peaks
