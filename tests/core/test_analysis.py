import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from lca_core import Allocator, FunctionBackend, open_run
from lca_core import analysis as A
from lca_core.backend_kit.numpy_models import MLP
from lca_core.tools.cli import main
from tests.core.models import digits_like

# -- helping -------------------------------------------------------------------------------


@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_helping_fractions_are_exact_on_constructed_arrays(steps, k, seed):
    rng = np.random.default_rng(seed)
    lca = rng.choice([-1.0, 0.0, 2.0], size=(steps, k))
    h = A.helping_fractions(lca)
    helped, hurt, zero = (lca < 0).sum(), (lca > 0).sum(), (lca == 0).sum()
    assert h.overall["helped"] == pytest.approx(100 * helped / lca.size)
    assert h.overall["hurt"] == pytest.approx(100 * hurt / lca.size)
    assert h.overall["zero"] == pytest.approx(100 * zero / lca.size)
    if helped + hurt:
        assert h.overall["helped_nonzero"] == pytest.approx(100 * helped / (helped + hurt))
    np.testing.assert_allclose(h.per_step[:, 0], 100 * (lca < 0).mean(axis=1))


def test_parameter_helping_counts_only_steps_a_parameter_moved():
    lca = np.array([[-1.0, 0.0, 1.0], [-1.0, 0.0, -1.0], [1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
    p = A.parameter_helping(lca, bins=4)
    np.testing.assert_allclose(p.fraction_helped, [0.75, np.nan, 0.5])
    assert p.histogram.sum() == 2 and p.mean == pytest.approx(0.625)


def test_run_helping_uses_stored_counts_and_matches_the_parameters(run_path):
    run = open_run(run_path)
    from_run = A.helping_fractions(run)
    from_array = A.helping_fractions(run.array("param_lca"), layout=run.layout)
    np.testing.assert_allclose(from_run.per_step, from_array.per_step)
    assert from_run.per_layer.keys() == {"fc0", "fc1"}


# -- streaming equals in-memory --------------------------------------------------------------


def test_streamed_results_equal_in_memory_results(run_path):
    run = open_run(run_path)
    full = run.array("param_lca")
    np.testing.assert_allclose(
        A.parameter_totals(run, chunk_steps=4), full.sum(axis=0), rtol=1e-6, atol=1e-12
    )
    a, b = A.parameter_helping(run, chunk_steps=7), A.parameter_helping(full)
    np.testing.assert_array_equal(a.fraction_helped, b.fraction_helped)
    t1, t2 = A.tails(run, chunk_steps=3), A.tails(full, chunk_steps=100)
    assert t1.tail_mass.observed == pytest.approx(t2.tail_mass.observed)
    assert t1.helping.shape == pytest.approx(t2.helping.shape, rel=1e-6)
    assert A.concentration(run).gini == pytest.approx(A.concentration(full).gini, rel=1e-6)
    o1 = A.oscillations(run, chunk_steps=4)
    o2 = A.oscillations(theta=run.array("theta"), grads=run.array("grads"), chunk_steps=50)
    np.testing.assert_array_equal(o1.motion.per_parameter, o2.motion.per_parameter)
    np.testing.assert_array_equal(o1.gradient.per_parameter, o2.gradient.per_parameter)


# -- layers --------------------------------------------------------------------------------


def test_layer_totals_windows_and_cumulative():
    layer_lca = np.arange(12.0).reshape(6, 2) - 5
    t = A.layer_totals(layer_lca, layers=["a", "b"], windows=[(0, 2), (2, 6)])
    np.testing.assert_allclose(t.totals, layer_lca.sum(0))
    np.testing.assert_allclose(t.window_totals.sum(0), t.totals)
    np.testing.assert_allclose(t.cumulative[-1], t.totals)


def test_neuron_totals_sum_over_the_non_neuron_axes(run_path):
    run = open_run(run_path)
    w = run.param_lca("fc0.weight").astype(np.float64)  # (T, 10, 16), neuron axis 0
    np.testing.assert_allclose(A.neuron_totals(run, "fc0.weight"), w.sum(axis=(0, 2)), rtol=1e-6)


def test_gini_and_top_share():
    assert A.gini(np.ones(10)) == pytest.approx(0.0)
    assert A.gini(np.r_[np.zeros(9), 1.0]) == pytest.approx(0.9)
    c = A.concentration(np.r_[-np.ones(98), -50.0, -50.0], top=(2.0,))
    assert c.top_share[2.0] == pytest.approx(100 / 198)


def test_compare_runs_flags_a_layer_that_hurts():
    rng = np.random.default_rng(0)
    runs = [
        np.column_stack([rng.normal(-1, 0.1, 20), rng.normal(0.05, 0.01, 20)]) for _ in range(6)
    ]  # per-layer LCA per step: layer 0 helps, layer 1 hurts
    result = A.compare_runs(runs, layers=["helps", "hurts"])
    assert result.p_hurts[1] < 0.001 < 0.5 < result.p_hurts[0]
    with pytest.raises(ValueError, match="at least two runs"):
        A.compare_runs(runs[:1])


# -- tails -----------------------------------------------------------------------------------


def test_weibull_shape_is_recovered_within_5_percent():
    rng = np.random.default_rng(1)
    samples = stats.weibull_min(0.6, scale=3e-5).rvs(size=20_000, random_state=rng)
    fit = A.fit_weibull(samples)
    assert fit.shape == pytest.approx(0.6, rel=0.05)
    assert fit.scale == pytest.approx(3e-5, rel=0.1)
    assert fit.ks_pvalue > 0.01  # a good fit is not rejected


def test_tail_mass_of_gaussian_values_matches_the_gaussian_and_heavy_tails_exceed_it():
    rng = np.random.default_rng(2)
    gauss = A.tails(rng.normal(size=(200, 1000)))
    assert gauss.tail_mass.ratio[:2] == pytest.approx([1.0, 1.0], rel=0.1)
    heavy = A.tails(rng.standard_t(2, size=(200, 1000)))
    assert heavy.tail_mass.ratio[2] > 3.0


# -- oscillations ----------------------------------------------------------------------------


def test_oscillations_on_a_known_zig_zag():
    steps = np.array([[1, 1, 1], [-1, 1, 0], [1, -1, 1], [-1, -1, 0], [1, 1, 1]], float)
    theta = np.vstack([np.zeros(3), np.cumsum(steps, axis=0)])
    o = A.oscillations(theta=theta, grads=steps)
    # param 0 flips every step (runs of 1), param 1 in pairs (+ + − − +: runs 2,2,1),
    # param 2 only moves forward (its zeros are not changes)
    np.testing.assert_allclose(o.motion.per_parameter, [1.0, 5 / 3, 3.0])
    np.testing.assert_allclose(o.gradient.per_parameter, [1.0, 5 / 3, 3.0])
    assert o.motion.never_changed == pytest.approx(1 / 3)


def test_oscillations_need_recorded_data(tmp_path):
    backend = FunctionBackend(lambda t: (float(t @ t), 2 * t), np.ones(3))
    alloc = Allocator(backend, tmp_path / "run")
    alloc.start()
    alloc.advance(np.zeros(3))
    alloc.close()
    with pytest.raises(ValueError, match="store_trajectory=True"):
        A.oscillations(open_run(tmp_path / "run"))


# -- moments of learning ---------------------------------------------------------------------


def test_local_minima_are_strict_negative_and_ranked():
    x = np.array([0, -1, 0, -5, -5, 0, -3, 0, 2, 1, 2])
    np.testing.assert_array_equal(A.local_minima(x, top=5), [1, 6])  # -5,-5 is not strict
    np.testing.assert_array_equal(A.local_minima(x, top=1), [6])


def test_planted_synchronised_peaks_are_found_and_noise_is_not():
    rng = np.random.default_rng(3)
    t, layers = 400, 4
    noise = rng.normal(0, 0.1, size=(t, layers))
    planted = np.sort(rng.choice(np.arange(5, t - 5, 7), size=15, replace=False))  # apart
    series = noise.copy()
    series[planted] -= 5.0  # every layer learns a lot on the same steps
    found = A.synchronization(series, top=20, draws=500, seed=1)
    assert set(planted) <= set(found.synchronized)
    assert found.p_value < 0.01 and found.count > found.baseline_mean + 3 * found.baseline_std
    shuffled = A.synchronization(noise, top=20, draws=500, seed=1)
    assert shuffled.p_value > 0.05


def test_class_synchronization_needs_per_class_data(run_path):
    per_class = A.class_synchronization(open_run(run_path), draws=50)
    assert sorted(per_class) == [0, 1, 2, 3]
    assert all(s.names == ["fc0", "fc1"] for s in per_class.values())


# -- accuracy and reconstruction -------------------------------------------------------------


def test_first_order_residuals_match_a_first_order_allocation(run_path, tmp_path):
    run = open_run(run_path)
    x, y = digits_like(5, n=200)
    mlp = MLP((16, 10, 4), activation="relu")
    backend = FunctionBackend(
        mlp.loss_and_grad, run.theta(0), data=(x[:150], y[:150]), layout=mlp.layout
    )
    alloc = Allocator(backend, rule="first_order")
    alloc.start(run.theta(0))
    direct = [alloc.advance(run.theta(t)).residual for t in range(1, run.steps + 1)]
    np.testing.assert_allclose(
        A.first_order_residuals(run, chunk_steps=4), direct, rtol=1e-4, atol=1e-7
    )  # gradients stored as float32
    acc = A.accuracy(run)
    assert acc.first_order.mean_abs > acc.residuals.mean_abs
    assert sum(acc.panels.values()) == run.steps


def test_loss_reconstruction_gap_is_the_cumulative_residual(run_path):
    run = open_run(run_path)
    rec = A.loss_reconstruction(run)
    np.testing.assert_allclose(rec.gap[1:], np.cumsum(run.residuals), atol=1e-12)
    assert rec.reconstructed[0] == run.losses[0]
    with pytest.raises(ValueError, match="T\\+1"):
        A.loss_reconstruction((np.zeros(3), np.zeros(3)))


# -- the command -----------------------------------------------------------------------------


def test_lca_analyze_prints_a_table_and_writes_json(run_path, tmp_path, capsys):
    out = tmp_path / "analysis.json"
    assert main(["analyze", str(run_path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for heading in (
        "Summary",
        "Helping per layer",
        "Tails",
        "Oscillations",
        "Synchronised moments",
        "Accuracy",
        "first order",
    ):
        assert heading in text
    data = json.loads(out.read_text())
    assert data["summary"]["steps"] == 30
    assert data["helping"]["layers"] == ["fc0", "fc1"]
    assert data["tails"]["helping"]["shape"] > 0


def test_analyze_says_what_a_run_lacks(tmp_path):
    backend = FunctionBackend(lambda t: (float(t @ t), 2 * t), np.ones(3))
    alloc = Allocator(backend, tmp_path / "run")
    alloc.start()
    for s in (0.5, 0.2, 0.1):
        alloc.advance(np.full(3, s))
    alloc.close()
    results = A.analyze(open_run(tmp_path / "run"))
    assert "param_lca" in results["tails"]["unavailable"]
    assert "store_trajectory" in results["oscillations"]["unavailable"]
    assert isinstance(results["helping"], A.HelpingFractions)


def test_the_analysis_text_is_in_plain_words(run_path):
    from lca_core.analysis import analyze, format_analysis

    text = format_analysis(analyze(open_run(run_path)))
    assert "panels {" not in text and "sub-intervals per step: " in text
    assert "smallest p this test can give" in text  # a floor of the p-value, said
    assert "Gini" in text and "(0 = every parameter" in text
    assert "KS D = the fit's largest gap" in text or "Weibull" not in text
