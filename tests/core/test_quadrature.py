import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core.quadrature import NestedSum, initial_panels, nodes, refinement_nodes, weights

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
