import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import (
    Allocator,
    BudgetExceededError,
    EmptyEvaluationSetError,
    FunctionBackend,
    LayoutMismatchError,
    NondeterministicLossError,
    NonFiniteError,
    open_run,
)
from lca_core.backend_kit.numpy_models import MLP
from lca_core.engine.evaluator import all_finite
from tests.checks import gauss_legendre_lca
from tests.core.models import (
    cubic,
    digits_like,
    linear,
    logistic,
    logistic_data,
    sgd,
    with_validation,
)

seeds = st.integers(0, 2**31 - 1)


def allocate(backend, trajectory, **options):
    alloc = Allocator(backend, **options)
    alloc.start(trajectory[0])
    results = [alloc.advance(theta) for theta in trajectory[1:]]
    return alloc, results


@given(seeds, st.integers(1, 12), st.floats(0.01, 0.5))
def test_simpson_is_exact_on_cubic_losses(seed, k, scale):
    fn = cubic(seed, k)
    rng = np.random.default_rng(seed + 1)
    traj = [rng.normal(size=k)]
    for _ in range(3):
        traj.append(traj[-1] + scale * rng.normal(size=k))
    _alloc, results = allocate(FunctionBackend(fn, traj[0]), traj)
    for r in results:
        delta_loss = r.loss_after - r.loss_before
        assert r.lca.sum() == pytest.approx(delta_loss, rel=1e-10, abs=1e-10)
        assert r.panels == 2  # exact already: no refinement
        assert r.converged


@given(seeds, st.integers(1, 12))
def test_first_order_is_exact_on_linear_losses(seed, k):
    fn = linear(seed, k)
    rng = np.random.default_rng(seed)
    traj = [rng.normal(size=k) for _ in range(4)]
    _, results = allocate(FunctionBackend(fn, traj[0]), traj, rule="first_order")
    for r in results:
        assert r.lca.sum() == pytest.approx(r.loss_after - r.loss_before, rel=1e-12, abs=1e-12)


def test_first_order_misses_curvature_and_is_flagged():
    fn = cubic(0, 4)
    traj = [np.zeros(4), np.ones(4)]
    _, (r,) = allocate(FunctionBackend(fn, traj[0]), traj, rule="first_order")
    assert abs(r.residual) > 1e-3
    assert not r.converged and r.panels == 1


@given(seeds, st.sampled_from(["trapezoid", "simpson"]), st.floats(0.5, 3.0))
def test_logistic_regression_converges_and_counts_passes(seed, rule, lr):
    x, y = logistic_data(seed)
    theta0 = np.random.default_rng(seed).normal(size=x.shape[1] + 1)
    traj = sgd(logistic, theta0, lr, 6, x, y)
    backend = FunctionBackend(logistic, theta0, data=(x, y))
    alloc, results = allocate(backend, traj, rule=rule, tol=1e-6)
    for before, after, r in zip(traj[:-1], traj[1:], results, strict=True):
        # the flag tells the truth both ways, against the loss change computed directly
        gap = abs(logistic(after, x, y)[0] - logistic(before, x, y)[0] - r.lca.sum())
        assert gap <= 1e-6 * (1 + 1e-6) if r.converged else gap > 1e-6 * (1 - 1e-6)
    # θ_0 three times (determinism check), then n new nodes per step: the endpoint is reused
    assert alloc.gradient_passes == 3 + sum(r.panels for r in results)
    summary = alloc.close()
    assert summary.budget_used < 0.01


def test_refinement_reaches_tol_on_a_curved_step():
    x, y = logistic_data(3)
    theta0 = np.zeros(x.shape[1] + 1)
    far = theta0 + 1.0  # one large step: the gradient turns along the path
    _alloc, (r,) = allocate(FunctionBackend(logistic, theta0, data=(x, y)), [theta0, far], tol=1e-5)
    assert r.panels == 16 and r.converged and abs(r.residual) <= 1e-5
    _coarse, (c,) = allocate(
        FunctionBackend(logistic, theta0, data=(x, y)), [theta0, far], tol=1e-5, max_panels=4
    )
    assert c.panels == 4
    assert not c.converged and abs(c.residual) > abs(r.residual)


def test_numpy_mlp_training_stays_within_budget():
    x, y = digits_like(1)
    mlp = MLP((16, 12, 4))
    theta0 = mlp.init(0)
    traj = sgd(mlp.loss_and_grad, theta0, 0.5, 25, x, y)
    alloc, results = allocate(
        FunctionBackend(mlp.loss_and_grad, theta0, data=(x, y), layout=mlp.layout), traj
    )
    summary = alloc.close()
    assert summary.loss_change < 0
    assert summary.budget_used < 0.01
    for before, after, r in zip(traj[:-1], traj[1:], results, strict=True):
        oracle = gauss_legendre_lca(lambda t: mlp.loss_and_grad(t, x, y)[1], before, after)
        layer_error = mlp.layout.reduce_by_layer(r.lca - oracle)
        assert np.all(np.abs(layer_error) <= 1e-3), layer_error  # the tolerance, per layer
    assert summary.layers.keys() == {"fc0", "fc1"}
    assert sum(summary.layers.values()) == pytest.approx(summary.sum_lca)


@given(seeds)
def test_per_class_allocations_sum_to_the_total(seed):
    x, y = digits_like(seed % 7, n=120)
    mlp = MLP((16, 6, 4))
    theta0 = mlp.init(seed % 5)
    traj = sgd(mlp.loss_and_grad, theta0, 0.3, 3, x, y)
    backend = FunctionBackend(mlp.loss_and_grad, theta0, data=(x, y), layout=mlp.layout)
    _, results = allocate(backend, traj, per_class=True)
    for r in results:
        assert r.class_lca.shape == (4, mlp.layout.size)
        np.testing.assert_allclose(r.class_lca.sum(axis=0), r.lca, rtol=1e-9, atol=1e-13)


def test_zero_gradient_and_frozen_coordinates_get_exactly_zero():
    x, y = digits_like(2, d=8)
    x[:, :3] = 0.0  # "always-black pixels": their weights never get a gradient
    mlp = MLP((8, 5, 4))
    theta0 = mlp.init(1)
    traj = sgd(mlp.loss_and_grad, theta0, 0.5, 4, x, y)
    for t in traj:  # freeze the last layer's bias: it never moves
        t[mlp.layout.slice_of("fc1.bias")] = theta0[mlp.layout.slice_of("fc1.bias")]
    backend = FunctionBackend(mlp.loss_and_grad, theta0, data=(x, y), layout=mlp.layout)
    _, results = allocate(backend, traj)
    w0 = mlp.layout.slice_of("fc0.weight")
    for r in results:
        assert np.all(r.lca[w0].reshape(5, 8)[:, :3] == 0.0)
        assert np.all(r.lca[mlp.layout.slice_of("fc1.bias")] == 0.0)
        assert r.layer_counts[:, 2].sum() >= 5 * 3 + 4


def test_validation_lca_has_its_own_residual():
    x, y = digits_like(4, n=200)
    mlp = MLP((16, 8, 4))
    theta0 = mlp.init(2)
    traj = sgd(mlp.loss_and_grad, theta0, 0.4, 4, x[:150], y[:150])
    backend = with_validation(mlp, theta0, x, y)
    _, results = allocate(backend, traj, validation=True)
    for r in results:
        assert abs(r.val_residual) <= 1e-3
        assert r.val_layer_lca.shape == (2,)
        assert not np.allclose(r.val_layer_lca, r.layer_lca)


def test_per_class_groups_the_training_passes_only(monkeypatch):
    """Only the training split's class parts are allocated: the validation set is
    evaluated whole, not split by class for nothing."""
    x, y = digits_like(4, n=200)
    mlp = MLP((16, 8, 4))
    traj = sgd(mlp.loss_and_grad, mlp.init(2), 0.4, 3, x[:150], y[:150])
    backend = with_validation(mlp, traj[0], x, y)
    asked = set()
    evaluate = backend.evaluate

    def recorded(thetas, *, state=None, split="train", per_class=False):
        asked.add((split, per_class))
        return evaluate(thetas, state=state, split=split, per_class=per_class)

    monkeypatch.setattr(backend, "evaluate", recorded)
    _, results = allocate(backend, traj, validation=True, per_class=True)
    assert asked == {("train", True), ("val", False)}
    for r in results:
        np.testing.assert_allclose(r.class_lca.sum(axis=0), r.lca, rtol=1e-9, atol=1e-13)
        assert abs(r.val_residual) <= 1e-3


# -- bad input -----------------------------------------------------------------------------


def test_nondeterministic_loss_is_refused_with_the_usual_causes():
    rng = np.random.default_rng(0)

    def dropout_loss(theta):
        mask = rng.random(theta.shape) > 0.5
        return float((mask * theta**2).sum()), 2 * mask * theta

    with pytest.raises(NondeterministicLossError, match="dropout"):
        Allocator(FunctionBackend(dropout_loss, np.ones(5))).start()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_stops_without_damaging_the_store(tmp_path, bad):
    fn = cubic(0, 3)

    def blows_up(theta):
        loss, grad = fn(theta)
        return (bad if theta[0] > 5 else loss), grad

    alloc = Allocator(FunctionBackend(blows_up, np.zeros(3)), tmp_path / "run")
    alloc.start()
    alloc.advance(np.full(3, 1.0))
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        alloc.advance(np.full(3, 10.0))
    alloc.close()
    run = open_run(tmp_path / "run")
    assert run.steps == 1 and len(run.losses) == 2 and np.all(np.isfinite(run.losses))


def test_non_finite_gradient_and_step_are_refused():
    nan_grad = lambda theta: (0.0, np.full_like(theta, np.nan))  # noqa: E731
    with pytest.raises(NonFiniteError, match="gradient"):
        Allocator(FunctionBackend(nan_grad, np.ones(2))).start()
    alloc = Allocator(FunctionBackend(cubic(1, 2), np.ones(2)))
    alloc.start()
    with pytest.raises(NonFiniteError, match="optimizer step 0"):
        alloc.advance(np.array([1.0, np.inf]))


@pytest.mark.parametrize("rule", ["simpson", "trapezoid", "auto", "first_order"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_along_the_path_is_refused(tmp_path, rule, bad):
    """Gradients along a step are checked through the residual they enter, also where the
    step does not move the bad coordinate (0·NaN is NaN); the store keeps the steps before."""
    fn = cubic(2, 3)

    def bad_gradient(theta):
        loss, grad = fn(theta)
        if theta[0] > 1.2:  # past the midpoint of the second step, the loss still finite
            grad = grad.copy()
            grad[2] = bad
        return loss, grad

    alloc = Allocator(FunctionBackend(bad_gradient, np.zeros(3)), tmp_path / "run", rule=rule)
    alloc.start()
    alloc.advance(np.array([1.0, 0.1, 0.0]))
    with pytest.raises(NonFiniteError, match="gradient is NaN or infinite"):
        alloc.advance(np.array([2.0, 0.2, 0.0]))  # the bad coordinate does not move
    alloc.close()
    assert open_run(tmp_path / "run").steps == 1


def test_a_non_finite_parameter_the_loss_does_not_use_is_refused():
    """Loss and gradients stay finite; Δ·ḡ does not (NaN·0 is NaN), and θ_1 is named."""
    fn = cubic(1, 2)

    def ignores_the_last(theta):
        loss, grad = fn(theta[:2])
        return loss, np.append(grad, 0.0)

    alloc = Allocator(FunctionBackend(ignores_the_last, np.ones(3)))
    alloc.start()
    with pytest.raises(NonFiniteError, match="optimizer step 0 produced NaN"):
        alloc.advance(np.array([1.1, 0.9, np.nan]))


def test_parameters_that_break_the_users_loss_are_named_as_the_cause():
    """A NaN in θ_1 is looked for when the step fails, whatever the failure."""

    def strict(theta):
        if not np.all(np.isfinite(theta)):
            raise ValueError("my loss refuses NaN")
        return cubic(1, 2)(theta)

    alloc = Allocator(FunctionBackend(strict, np.ones(2)))
    alloc.start()
    with pytest.raises(NonFiniteError, match="optimizer step 0 produced NaN") as caught:
        alloc.advance(np.array([1.0, np.nan]))
    assert isinstance(caught.value.__cause__, ValueError)


@given(
    st.lists(
        st.sampled_from([0.0, -1.5, 1e300, -1e300, 1.7e308, np.nan, np.inf, -np.inf]),
        min_size=1,
        max_size=40,
    )
)
def test_the_finiteness_check_is_exact_also_where_the_sum_overflows(values):
    """The check sums first (cheap); a sum that overflows from finite values is not a NaN."""
    a = np.array(values)
    assert all_finite(a) == bool(np.all(np.isfinite(a)))


def test_layout_mismatch_between_steps_is_refused():
    alloc = Allocator(FunctionBackend(cubic(1, 3), np.ones(3)))
    alloc.start()
    with pytest.raises(LayoutMismatchError, match="between steps"):
        alloc.advance(np.ones(4))
    wrong = lambda theta: (0.0, np.ones(7))  # noqa: E731
    with pytest.raises(LayoutMismatchError, match="gradient of shape"):
        Allocator(FunctionBackend(wrong, np.ones(3))).start()


def test_empty_evaluation_set_is_refused():
    with pytest.raises(EmptyEvaluationSetError, match="empty"):
        FunctionBackend(logistic, np.zeros(3), data=(np.zeros((0, 2)), np.zeros(0, int)))


def test_strict_budget_raises_after_saving(tmp_path):
    fn = cubic(5, 3)
    alloc = Allocator(
        FunctionBackend(fn, np.zeros(3)), tmp_path / "run", rule="first_order", strict=True
    )
    alloc.start()
    alloc.advance(np.ones(3))
    with pytest.raises(BudgetExceededError, match="budget"):
        alloc.close()
    assert open_run(tmp_path / "run").steps == 1


def test_bad_options_are_explained():
    backend = FunctionBackend(cubic(0, 2), np.ones(2))
    with pytest.raises(ValueError, match="per_class"):
        Allocator(backend, per_class=True)
    with pytest.raises(ValueError, match="validation"):
        Allocator(backend, validation=True)
    with pytest.raises(ValueError, match="unknown quadrature rule"):
        Allocator(backend, rule="euler")
    with pytest.raises(RuntimeError, match="start"):
        Allocator(backend).advance(np.ones(2))


def test_backend_kit_refuses_a_split_or_classes_it_was_not_given():
    x, y = logistic_data(0)
    with_data = FunctionBackend(logistic, np.zeros(6), data=(x, y))
    assert with_data.splits == ("train",) and with_data.num_classes == 2
    with pytest.raises(ValueError, match=r"no 'val' evaluation set.*val_data="):
        with_data.evaluate([np.zeros(6)], split="val")
    bare = FunctionBackend(cubic(0, 3), np.zeros(3))
    with pytest.raises(ValueError, match="labelled classification data"):
        bare.evaluate([np.zeros(3)], per_class=True)
    # the per-class parts of one evaluation add up to the whole
    (ev,) = with_data.evaluate([np.ones(6)], per_class=True)
    assert ev.class_losses.sum() == pytest.approx(ev.loss)
    assert ev.loss == pytest.approx(logistic(np.ones(6), x, y)[0])
