import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import Evaluation
from lca_core.engine.quadrature import (
    NestedSum,
    initial_panels,
    integrate,
    nodes,
    refinement_nodes,
    weights,
)
from tests.core.models import cubic, logistic, logistic_data

finite = st.floats(-10, 10, allow_nan=False)
rules = st.sampled_from(["trapezoid", "simpson"])


@given(rules, st.integers(0, 5))
def test_weights_sum_to_one_and_nodes_nest(rule, doublings):
    n = initial_panels(rule) * 2**doublings
    assert weights(rule, n).sum() == pytest.approx(1.0, abs=1e-14)
    refined = np.union1d(nodes(rule, n), refinement_nodes(n))
    np.testing.assert_allclose(refined, nodes(rule, 2 * n), atol=1e-15)


@given(st.lists(finite, min_size=4, max_size=4), st.integers(0, 4))
def test_simpson_is_exact_on_cubics(coefs, doublings):
    n = 2 * 2**doublings
    p = np.polynomial.Polynomial(coefs)
    exact = p.integ()(1.0) - p.integ()(0.0)
    approx = weights("simpson", n) @ p(nodes("simpson", n))
    assert approx == pytest.approx(exact, rel=1e-10, abs=1e-10)


@given(st.lists(finite, min_size=2, max_size=2))
def test_first_order_is_exact_on_constants_only(coefs):
    p = np.polynomial.Polynomial(coefs)  # ∫ of the gradient of a linear loss: a constant
    const = np.polynomial.Polynomial(coefs[:1])
    assert weights("first_order", 1) @ const(nodes("first_order", 1)) == pytest.approx(coefs[0])
    if abs(coefs[1]) > 1e-3:
        assert weights("first_order", 1) @ p(nodes("first_order", 1)) != pytest.approx(
            p.integ()(1.0), rel=1e-6
        )


@given(rules, st.integers(0, 4), st.integers(0, 2**31 - 1))
def test_nested_sum_matches_the_weighted_sum(rule, doublings, seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(3, 4, 4))  # a random polynomial-ish vector field: f(s) = a + b s + c s²
    field = lambda s: f[0] + f[1] * s + f[2] * np.sin(3 * s)  # noqa: E731
    n0 = initial_panels(rule)
    interior = [field(s) for s in nodes(rule, n0)[1:-1]]
    acc = NestedSum(rule, field(0.0), field(1.0), interior)
    for _ in range(doublings):
        acc.refine([field(s) for s in refinement_nodes(acc.n)])
    w, s = weights(rule, acc.n), nodes(rule, acc.n)
    expected = sum(wj * field(sj) for wj, sj in zip(w, s, strict=True))
    np.testing.assert_allclose(acc.value(), expected, rtol=1e-12, atol=1e-12)


def test_bad_rule_and_panel_counts_are_rejected():
    with pytest.raises(ValueError, match="unknown quadrature rule"):
        nodes("rk4", 2)
    with pytest.raises(ValueError, match="cannot use 3"):
        weights("simpson", 3)


@given(st.integers(0, 10**6), st.integers(1, 6), rules, st.floats(0.1, 2.0))
def test_integrate_refines_until_tol_and_evaluates_each_node_once(seed, k, rule, scale):
    """The integrator alone, on a pure function: its residual is the true one (ΔL from the
    losses, not from the rule), it stops only within tol or at max_panels, and it asks for
    every node once — the panel count is the number of new nodes."""
    x, y = logistic_data(seed % 5, n=60, d=k)
    rng = np.random.default_rng(seed)
    theta0 = rng.normal(size=k + 1)
    delta = scale * rng.normal(size=k + 1)
    asked: list[float] = []

    def evaluate(new_nodes):
        asked.extend(new_nodes)
        return {"train": [Evaluation(*logistic(theta0 + s * delta, x, y)) for s in new_nodes]}

    start = {"train": Evaluation(*logistic(theta0, x, y))}
    out = integrate(rule, start, delta, evaluate, tol=1e-7, max_panels=64)
    true_change = logistic(theta0 + delta, x, y)[0] - start["train"].loss
    allocated = (delta * out.grads["train"].value()).sum()
    assert out.residuals["train"] == pytest.approx(true_change - allocated, abs=1e-12)
    assert abs(out.residuals["train"]) <= 1e-7 or out.panels == 64
    assert len(asked) == len(set(asked)) == out.panels
    assert all(0 < s <= 1 for s in asked)


def test_integrate_is_exact_on_a_cubic_with_simpson_and_never_refines():
    fn = cubic(3, 5)
    theta0, delta = np.zeros(5), np.ones(5)
    calls = []

    def evaluate(new_nodes):
        calls.append(list(new_nodes))
        return {"train": [Evaluation(*fn(theta0 + s * delta)) for s in new_nodes]}

    out = integrate(
        "simpson", {"train": Evaluation(*fn(theta0))}, delta, evaluate, tol=1e-9, max_panels=64
    )
    assert calls == [[0.5, 1.0]] and out.panels == 2
    assert abs(out.residuals["train"]) < 1e-9


def asking(fn, theta0, delta, asked):
    def evaluate(new_nodes):
        asked.append(list(new_nodes))
        return {"train": [Evaluation(*fn(theta0 + s * delta)) for s in new_nodes]}

    return evaluate


def test_auto_stops_at_the_trapezoid_on_a_quadratic_and_moves_to_simpson_on_a_cubic():
    """A quadratic loss has a linear gradient: the trapezoid is exact with one new pass. A
    cubic's is not: auto adds the midpoint and Simpson is exact — two passes, as Simpson."""
    curved = cubic(0, 4)
    theta0, delta = np.zeros(4), np.ones(4)

    a = np.diag([1.0, 2.0, 3.0, 4.0])
    square = lambda t: (0.5 * t @ a @ t, a @ t)  # noqa: E731
    asked: list[list[float]] = []
    start = {"train": Evaluation(*square(theta0))}
    out = integrate(
        "auto", start, delta, asking(square, theta0, delta, asked), tol=1e-12, max_panels=64
    )
    assert asked == [[1.0]] and out.panels == 1 and abs(out.residuals["train"]) < 1e-12
    asked.clear()
    start = {"train": Evaluation(*curved(theta0))}
    out = integrate(
        "auto", start, delta, asking(curved, theta0, delta, asked), tol=1e-9, max_panels=64
    )
    assert asked == [[1.0], [0.5]] and out.panels == 2 and abs(out.residuals["train"]) < 1e-9


@given(st.integers(0, 10**6), st.integers(1, 5), st.floats(0.1, 3.0))
def test_auto_never_asks_more_than_simpson_and_meets_the_same_tolerance(seed, k, scale):
    x, y = logistic_data(seed % 5, n=60, d=k)
    rng = np.random.default_rng(seed)
    theta0, delta = rng.normal(size=k + 1), scale * rng.normal(size=k + 1)
    fn = lambda t: logistic(t, x, y)  # noqa: E731
    start = {"train": Evaluation(*fn(theta0))}
    counts = {}
    for rule in ("auto", "simpson"):
        asked: list[list[float]] = []
        out = integrate(
            rule, start, delta, asking(fn, theta0, delta, asked), tol=1e-6, max_panels=64
        )
        counts[rule] = sum(map(len, asked))
        assert abs(out.residuals["train"]) <= 1e-6 or out.panels == 64
    assert counts["auto"] <= counts["simpson"]
