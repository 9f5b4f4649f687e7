"""Resampled subsets (``eval_subset=n, resample=...``): every step on a fresh subset, with
error bars that hold for each step and for sums over steps, and a run checked against the
full set's loss at its ends."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from lca_core import Allocator, BudgetExceededError, FunctionBackend, Tracker, open_run
from lca_core.analysis.catalog import analyze
from lca_core.engine.resampled import CheckResult
from lca_core.engine.uncertainty import cumulative_stderr, sum_stderr
from lca_core.layout import Layout
from tests.core.models import sgd

DESIGNS = ["shared", "paired"]
LAYOUT = Layout.from_shapes({"a": (3,), "b": (2,)})


def quadratic_problem(seed: int, n: int = 400, cubic: float = 0.05):
    """ℓ_i(θ) = ½‖θ − x_i‖² + ⅓ Σ_j c_j θ_j³: the mean gradient is θ − x̄ + cθ², so the
    full set's exact LCA of a step is known in closed form (the path integral of a
    quadratic gradient is Simpson's), and each example's gradient differs by −x_i."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, LAYOUT.size)) * rng.uniform(0.5, 2.0, LAYOUT.size)
    y = rng.integers(0, 4, n)
    c = rng.normal(size=LAYOUT.size) * cubic

    def loss_and_grad(theta, xs, ys):
        diff = theta - xs
        loss = 0.5 * np.mean((diff**2).sum(1)) + (c * theta**3).sum() / 3
        return float(loss), diff.mean(0) + c * theta**2

    def exact_lca(theta0, theta1, design="paired"):
        """The full set's exact LCA (Simpson's), or for the shared design what it estimates:
        the full set's trapezoid on the step's two ends."""
        delta = theta1 - theta0
        mid = (theta0 + theta1) / 2
        g = [loss_and_grad(t, x, y)[1] for t in (theta0, mid, theta1)]
        mean = (g[0] + g[2]) / 2 if design == "shared" else (g[0] + 4 * g[1] + g[2]) / 6
        return LAYOUT.reduce_by_layer(delta * mean)

    theta0 = rng.normal(size=LAYOUT.size)
    traj = sgd(lambda t: loss_and_grad(t, x, y), theta0, 0.3, 6)
    return loss_and_grad, (x, y), traj, exact_lca


def resampled_run(problem, design, seed, store=None, **options):
    loss_and_grad, data, traj, _ = problem
    backend = FunctionBackend(loss_and_grad, traj[0], data=data, layout=LAYOUT)
    backend.use_subset(48, seed=seed, resample=design)
    alloc = Allocator(backend, store, check_determinism=False, **options)
    alloc.start(traj[0])
    results = [alloc.advance(theta) for theta in traj[1:]]
    return results, alloc.close()


@pytest.mark.parametrize("design", DESIGNS)
@given(data_seed=st.integers(0, 2**16))
def test_resampled_steps_are_unbiased_and_their_intervals_cover(design, data_seed):
    """Over 48 resampling seeds on one trajectory: each step's per-layer estimate
    averages to the full set's exact LCA (within 5 standard errors of the mean; the
    shared design's trapezoid: to the full set's trapezoid on the same ends), the
    95 % t-intervals cover it in at least 90 % of (seed, step, layer) cases, and a whole
    run's sum has the spread its standard error (with the shared ends' covariance) says."""
    problem = quadratic_problem(data_seed)
    _, _, traj, exact_lca = problem
    exact = np.array([exact_lca(a, b, design) for a, b in itertools.pairwise(traj)])
    estimates, errors, run_sums, run_errors = [], [], [], []
    for seed in range(48):
        results, _ = resampled_run(problem, design, seed)
        estimates.append([r.layer_lca for r in results])
        errors.append([r.layer_lca_stderr for r in results])
        cov = np.array([r.layer_lca_cov_prev for r in results]) if design == "shared" else None
        run_sums.append(np.sum(estimates[-1], axis=0))
        run_errors.append(sum_stderr(np.array(errors[-1]), design, cov))
    estimates, errors = np.array(estimates), np.array(errors)
    spread = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) <= 5 * spread + 1e-12)
    t = stats.t.ppf(0.975, 15)
    assert np.mean(np.abs(estimates - exact) <= t * errors) >= 0.9
    # a run's total: its predicted variance matches the seeds' spread (48 sums of products,
    # heavier-tailed than normal: their variance ratio spreads beyond a χ²'s; at 400 seeds
    # it is 0.85–1.1)
    observed = np.var(np.array(run_sums), axis=0, ddof=1)
    predicted = np.mean(np.array(run_errors) ** 2, axis=0)
    assert np.all((observed / predicted > 0.33) & (observed / predicted < 2.5)), (
        observed / predicted
    )


def test_shared_ends_are_correlated_and_the_covariance_is_what_makes_sums_right():
    """Adjacent shared-design steps share a subset: their per-layer estimates covary as
    each step's stored covariance says (the seeds' sample covariance, against its mean)."""
    problem = quadratic_problem(7)
    first, second, predicted = [], [], []
    for seed in range(200):
        results, _ = resampled_run(problem, "shared", seed)
        first.append(results[1].layer_lca)
        second.append(results[2].layer_lca)
        predicted.append(results[2].layer_lca_cov_prev)
    first, second = np.array(first), np.array(second)
    observed = np.mean((first - first.mean(0)) * (second - second.mean(0)), axis=0) * 200 / 199
    predicted = np.mean(predicted, axis=0)
    assert np.all(np.sign(predicted) == np.sign(observed)) and np.all(predicted != 0)
    np.testing.assert_allclose(observed, predicted, rtol=0.45)


@pytest.mark.parametrize("design", DESIGNS)
def test_a_resampled_run_is_checked_against_the_full_set_and_stored(design, tmp_path):
    problem = quadratic_problem(3)
    loss_and_grad, (x, y), traj, _ = problem
    results, summary = resampled_run(problem, design, 0, tmp_path / "run")
    full_change = loss_and_grad(traj[-1], x, y)[0] - loss_and_grad(traj[0], x, y)[0]
    check = summary.run_check
    assert check is not None and check.consistent
    assert check.loss_change == pytest.approx(full_change, rel=1e-12)
    assert summary.loss_change == pytest.approx(full_change, rel=1e-12)
    assert check.sum_lca == pytest.approx(sum(r.layer_lca.sum() for r in results), rel=1e-12)
    assert "run check" in str(summary) and "consistent" in str(summary)
    assert summary.pct_helped is None and "not measured" in str(summary)
    run = open_run(tmp_path / "run")
    assert run.design == design and run.summary() == summary
    np.testing.assert_allclose(run.array("lca_stderr"), [r.lca_stderr for r in results])
    if design == "shared":  # one pass per step, each a trapezoid on its two subsets
        assert np.all(run.panels == 1) and run.has("lca_cov_prev")
        assert run.array("lca_cov_prev")[0] == 0 and np.all(run.array("lca_cov_prev")[1:] != 0)
    else:  # the identity holds on each step's subset, at both of its ends
        np.testing.assert_allclose(
            [r.loss_after - r.loss_before for r in results],
            [r.layer_lca.sum() + r.residual for r in results],
            atol=1e-12,
        )
        assert not run.has("lca_cov_prev")
    # the subsets are drawn afresh: every step's start loss is another subset's
    assert len({round(r.loss_before, 12) for r in results}) == len(results)


@pytest.mark.parametrize("design", DESIGNS)
def test_a_resampled_run_costs_the_passes_its_design_says(design):
    problem = quadratic_problem(4)
    results, summary = resampled_run(problem, design, 0, rule="simpson")
    steps = len(results)
    # θ_0 once on the subset, the full set at both ends; then per step: shared one pass
    # (its end), paired its start again plus Simpson's two (the first step's start is θ_0's)
    per_step = {"shared": steps, "paired": 3 * steps - 1}[design]
    assert summary.gradient_passes == 1 + 2 + per_step


def test_a_resumed_resampled_run_draws_as_the_uninterrupted_one(tmp_path):
    problem = quadratic_problem(5)
    loss_and_grad, data, traj, _ = problem
    _, whole = resampled_run(problem, "shared", 0, tmp_path / "whole")

    def tracker(store, **options):
        backend = FunctionBackend(loss_and_grad, traj[0], data=data, layout=LAYOUT)
        return Tracker(backend, store, eval_subset=48, resample=True, **options)

    first = tracker(tmp_path / "parts")
    for a, b in itertools.pairwise(traj[:4]):
        first.update(a, b)
    first.close()
    again = tracker(tmp_path / "parts", resume=True)
    for a, b in itertools.pairwise(traj[3:]):
        again.update(a, b)
    again.close()
    one, two = open_run(tmp_path / "whole"), open_run(tmp_path / "parts")
    np.testing.assert_allclose(two.layer_lca, one.layer_lca, rtol=1e-12)
    np.testing.assert_allclose(two.layer_lca_stderr, one.layer_lca_stderr, rtol=1e-12)
    # the resumed step's covariance needs the step before's end: the one number lost
    np.testing.assert_allclose(
        np.delete(two.array("lca_cov_prev"), 3), np.delete(one.array("lca_cov_prev"), 3)
    )
    assert two.summary().run_check.loss_change == pytest.approx(whole.run_check.loss_change)


def test_the_run_check_says_when_the_subsets_miss_the_full_set():
    ok = CheckResult(1.0, 0.5, -0.5, -0.52, 0.01, budget=0.01)
    assert ok.z == pytest.approx(-2.0) and ok.consistent
    off = CheckResult(1.0, 0.5, -0.5, -0.6, 0.01, budget=0.01)
    assert not off.consistent and "inconsistent (-10.0 SE)" in str(off)
    tight = CheckResult(1.0, 0.5, -0.5, -0.502, 1e-6, budget=0.01)  # within the budget
    assert abs(tight.z) > 3 and tight.consistent
    # moving buffers (BatchNorm's running statistics) change the loss too: ΔL = Σ LCA + drift
    drifted = CheckResult(1.0, 0.5, -0.5, -0.7, 0.01, budget=0.01, sum_drift=0.21)
    assert drifted.z == pytest.approx(1.0) and drifted.consistent
    assert "+ drift +0.21" in str(drifted)


def test_an_inconsistent_run_is_flagged_and_strict_raises(tmp_path):
    """Steps too long for the shared design's trapezoid (a strongly cubic loss): its
    quadrature error, which no error bar holds, makes Σ LCA miss the full set's ΔL by
    many standard errors, and the run's check says so."""
    problem = quadratic_problem(6, cubic=1.0)
    with pytest.raises(BudgetExceededError, match="inconsistent"):
        resampled_run(problem, "shared", 0, tmp_path / "run", strict=True)
    summary = open_run(tmp_path / "run").summary()  # the data is kept
    assert summary.over_budget and "misses the full set" in summary.accuracy_warning()
    assert "resample='paired'" in summary.accuracy_warning()
    _, paired = resampled_run(problem, "paired", 0)  # refined steps: consistent again
    assert paired.run_check.consistent


def test_analyses_that_need_exact_per_parameter_values_refuse_a_resampled_run(tmp_path):
    problem = quadratic_problem(8)
    resampled_run(problem, "shared", 0, tmp_path / "run", store_params=True)
    results = analyze(open_run(tmp_path / "run"))
    for key in ("helping", "parameter_helping", "tails", "concentration", "accuracy"):
        assert "resampled subsets" in results[key]["unavailable"], key
    layers = results["layers"]  # per layer: the totals, with their error bars
    assert layers.stderr is not None and np.all(layers.stderr > 0)


def test_resample_is_refused_where_it_cannot_work():
    loss_and_grad, data, traj, _ = quadratic_problem(9)

    def backend():
        return FunctionBackend(loss_and_grad, traj[0], data=data, layout=LAYOUT)

    with pytest.raises(ValueError, match="give eval_subset=n too"):
        Tracker(backend(), resample=True)
    with pytest.raises(ValueError, match="resample must be"):
        Tracker(backend(), eval_subset=48, resample="often")
    with pytest.raises(ValueError, match="first_order"):
        Tracker(backend(), eval_subset=48, resample=True, rule="first_order")
    with pytest.raises(ValueError, match="record-only"):
        Tracker(backend(), eval_subset=48, resample=True, record_only=True, store="unused")


@given(
    se=st.lists(st.floats(0, 1), min_size=1, max_size=12),
    rho=st.floats(-0.5, 0.5),
)
def test_sums_over_steps_add_variances_and_the_shared_covariances(se, rho):
    se = np.array(se)
    cov = rho * se * np.roll(se, 1)  # with the step before
    assert sum_stderr(se, "fixed") == pytest.approx(se.sum())
    assert sum_stderr(se, "paired") == pytest.approx(np.sqrt((se**2).sum()))
    variance = (se**2).sum() + 2 * cov[1:].sum()
    assert sum_stderr(se, "shared", cov) == pytest.approx(np.sqrt(max(variance, 0.0)))
    # the running sums' errors end at the whole sum's, and each is a sum of its own
    for design in ("fixed", "paired", "shared"):
        running = cumulative_stderr(se, design, cov)
        for t in range(len(se)):
            assert running[t] == pytest.approx(sum_stderr(se[: t + 1], design, cov[: t + 1]))


def test_the_cumulative_layer_curves_of_a_resampled_run_have_bands(tmp_path):
    from lca_core.plot import plot_layer_curves

    resampled_run(quadratic_problem(2), "shared", 0, tmp_path / "run")
    run = open_run(tmp_path / "run")
    for cumulative in (False, True):
        fig = plot_layer_curves(run, cumulative=cumulative)
        bands = fig.axes[0].collections
        assert len(bands) == len(run.layers)
        widths = [np.ptp(b.get_paths()[0].vertices[:, 1]) for b in bands]
        assert all(w > 0 for w in widths)
