"""The optimizer-aware split: A = Σ_part ḡ ⊙ Δ_part, through the core (DESIGN §13)."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lca_core import PARTS, FunctionBackend, Tracker, UnsupportedOptimizerError, open_run
from lca_core.backend_kit.numpy_models import MLP
from lca_core.engine.parts import part_deltas, part_layer_sums
from lca_core.errors import AccuracyWarning
from lca_core.layout import Layout
from tests.core.models import HeavyBall, digits_like
from tests.core.models import momentum_run as train

finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@given(arrays(np.float64, (3, 12), elements=finite), arrays(np.float64, 12, elements=finite))
def test_parts_sum_to_the_step_and_its_allocation(parts, gbar):
    layout = Layout.from_shapes({"a": (5,), "b": (3, 2), "c": (1,)})
    delta = parts.sum(axis=0)
    deltas = part_deltas(delta, {"momentum": parts[1], "weight_decay": parts[2]})
    np.testing.assert_array_equal(deltas[1:], parts[1:])
    np.testing.assert_allclose(deltas.sum(axis=0), delta, rtol=1e-12, atol=1e-9)
    layer_lca = layout.reduce_by_layer(gbar * delta)
    sums = part_layer_sums(layout.reduce_by_layer, gbar, deltas, layer_lca)
    scale = np.abs(sums).max() + np.abs(layer_lca).max()  # the remainder: to one rounding
    np.testing.assert_allclose(sums.sum(axis=0), layer_lca, rtol=0, atol=4e-16 * scale)
    np.testing.assert_allclose(
        sums[0], layout.reduce_by_layer(gbar * parts[0]), rtol=1e-6, atol=1e-9 * scale + 1e-300
    )


def test_a_part_lca_does_not_have_is_refused():
    with pytest.raises(ValueError, match="nesterov"):
        part_deltas(np.zeros(2), {"nesterov": np.zeros(2)})


@pytest.mark.parametrize("opt", [HeavyBall(0.3, 0.9, 0.1, 1e-2), HeavyBall(0.3, 0.5)])
def test_each_step_is_split_and_the_parts_sum_to_it(opt, tmp_path):
    results, layout = train(opt, tmp_path / "run", store_params=True)
    for r in results:
        assert r.part_layer_lca.shape == (len(PARTS), len(layout.layers))
        np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, rtol=0, atol=1e-14)
        np.testing.assert_allclose(r.part_lca.sum(axis=0), r.lca, atol=1e-14)
    later = np.array([r.part_layer_lca for r in results[1:]])
    assert np.abs(later[:, 1]).sum() > 0  # momentum carried from the first step on
    assert (np.abs(later[:, 2]).sum() > 0) == (opt.wd > 0)
    run = open_run(tmp_path / "run")
    assert run.parts == list(PARTS) and run.config["optimizer"] == "test.HeavyBall"
    np.testing.assert_array_equal(run.part_layer_lca, [r.part_layer_lca for r in results])
    np.testing.assert_allclose(
        run.array("part_lca"), [r.part_lca for r in results], rtol=1e-6, atol=1e-12
    )


def test_plain_sgd_has_no_momentum_and_no_decay_part():
    results, _ = train(HeavyBall(0.3))
    for r in results:
        assert not r.part_layer_lca[1:].any()
        np.testing.assert_array_equal(r.part_layer_lca[0], r.layer_lca)


def test_a_block_of_steps_splits_as_the_sum_of_its_steps():
    opt = HeavyBall(0.2, 0.9, wd=1e-2)
    whole, _ = train(opt, steps=6, every=3)
    assert len(whole) == 2
    for r in whole:
        np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, atol=1e-14)
        assert np.abs(r.part_layer_lca[1]).sum() > 0


def test_validation_and_subsets_are_split_with_standard_errors(tmp_path):
    results, _ = train(HeavyBall(0.3, 0.9, wd=1e-2), tmp_path / "run", val=True, eval_subset=0.5)
    run = open_run(tmp_path / "run")
    for r in results:
        np.testing.assert_allclose(r.val_part_layer_lca.sum(axis=0), r.val_layer_lca, atol=1e-14)
        assert r.part_layer_lca_stderr.shape == r.part_layer_lca.shape
        assert (r.part_layer_lca_stderr >= 0).all()
        assert r.part_layer_lca_stderr[1].any() == (r.step > 0)  # no momentum at step 0
    np.testing.assert_array_equal(
        run.array("val_part_layer_lca"), [r.val_part_layer_lca for r in results]
    )
    np.testing.assert_array_equal(
        run.array("part_layer_lca_stderr"), [r.part_layer_lca_stderr for r in results]
    )


def test_an_optimizer_the_core_cannot_read_is_refused():
    with pytest.raises(UnsupportedOptimizerError, match="Splitter"):
        train("sgd")


def test_a_step_the_rule_does_not_explain_is_warned():
    with pytest.warns(AccuracyWarning, match="not the optimizer's"):
        train(HeavyBall(0.3, 0.9), after=lambda t: t * 0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        train(HeavyBall(0.3, 0.9))


def test_update_without_the_states_is_refused():
    x, y = digits_like(3, n=60)
    mlp = MLP((16, 4))
    theta = mlp.init(0)
    backend = FunctionBackend(lambda t: mlp.loss_and_grad(t, x, y), theta, layout=mlp.layout)
    tracker = Tracker(backend, optimizer=HeavyBall(0.1))
    with pytest.raises(TypeError, match="opt_state"):
        tracker.update(theta, theta - 0.1)


def test_the_analysis_totals_each_part_by_layer_and_says_which_decided(run_path):
    from lca_core.analysis import analyze, format_analysis, optimizer_parts

    run = open_run(run_path)
    p = optimizer_parts(run)
    np.testing.assert_allclose(p.totals, run.part_layer_lca.sum(axis=0))
    np.testing.assert_allclose(p.totals.sum(axis=0), run.layer_lca.sum(axis=0), atol=1e-12)
    np.testing.assert_allclose(p.shares.sum(axis=0), 1.0)
    for j in range(len(p.layers)):
        sign = np.sign(p.layer_totals[j])
        assert sign * p.totals[p.parts.index(p.decided_by[j]), j] == max(sign * p.totals[:, j])
    np.testing.assert_allclose(p.per_step.sum(axis=1), run.layer_lca.sum(axis=1), atol=1e-12)
    text = format_analysis(analyze(run))
    assert "What moved each layer" in text and f"mostly by {p.decided_by[0]}" in text


def test_parts_are_compared_across_seeds_with_a_test_per_part_and_layer(tmp_path):
    from lca_core.analysis import compare_parts

    runs = []
    for seed in range(3):
        train(HeavyBall(0.3, 0.9, wd=1e-2), tmp_path / f"s{seed}", steps=4)
        runs.append(open_run(tmp_path / f"s{seed}"))
    cmp = compare_parts(runs)
    assert cmp.totals.shape == (3, len(PARTS), len(runs[0].layers))
    assert ((cmp.p_hurts >= 0) & (cmp.p_hurts <= 1) | np.isnan(cmp.p_hurts)).all()
    np.testing.assert_allclose(cmp.mean, cmp.totals.mean(axis=0))
    with pytest.raises(ValueError, match="at least two"):
        compare_parts(runs[:1])


def test_an_unsplit_run_says_how_to_record_the_parts(tmp_path):
    from lca_core.analysis import analyze

    x, y = digits_like(3, n=60)
    mlp = MLP((16, 4))
    backend = FunctionBackend(mlp.loss_and_grad, mlp.init(0), layout=mlp.layout, data=(x, y))
    tracker = Tracker(backend, tmp_path / "run")
    theta = mlp.init(0)
    tracker.update(theta, theta - 0.1 * mlp.loss_and_grad(theta, x, y)[1])
    tracker.close()
    run = open_run(tmp_path / "run")
    assert run.parts == []
    assert "optimizer=" in analyze(run)["optimizer_parts"]["unavailable"]
    with pytest.raises(KeyError, match="optimizer="):
        _ = run.part_layer_lca


def test_a_step_that_did_not_move_has_no_parts():
    """A step the optimizer skipped (GradScaler on an overflow) or a frozen parameter: Δ = 0,
    whatever the momentum buffer says."""
    x, y = digits_like(3, n=60)
    mlp = MLP((16, 4))
    theta = mlp.init(0)
    backend = FunctionBackend(mlp.loss_and_grad, theta, layout=mlp.layout, data=(x, y))
    opt = HeavyBall(0.1, 0.9, wd=0.1)
    tracker = Tracker(backend, optimizer=opt, store_params=True)
    b = np.ones_like(theta)
    moved = theta.copy()
    moved[:5] -= 0.01  # five parameters move, the rest stay
    result = tracker.update(theta, moved, opt_state=(b, b))
    assert not result.part_lca[:, 5:].any()  # no part where nothing moved
    assert result.part_lca[1, :5].all() and result.part_lca[2, :5].all()
    np.testing.assert_allclose(result.part_lca.sum(axis=0), result.lca, atol=1e-15)


def test_a_run_resumes_split_as_it_was_recorded(tmp_path):
    train(HeavyBall(0.3, 0.9), tmp_path / "run", steps=3)
    train(HeavyBall(0.3, 0.9), tmp_path / "run", steps=2, resume=True)
    run = open_run(tmp_path / "run")
    assert run.steps == 5 and run.part_layer_lca.shape[0] == 5
    assert run.summary().parts["momentum"] == pytest.approx(run.part_layer_lca[:, 1].sum())
    x, y = digits_like(3, n=240)
    mlp = MLP((16, 8, 4), activation="tanh")
    backend = FunctionBackend(mlp.loss_and_grad, mlp.init(2), layout=mlp.layout, data=(x, y))
    with pytest.raises(ValueError, match=r"recorded with optimizer= \(test\.HeavyBall\)"):
        Tracker(backend, tmp_path / "run", resume=True)
    assert open_run(tmp_path / "run").steps == 5  # nothing written
