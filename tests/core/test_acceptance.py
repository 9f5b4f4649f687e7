"""The acceptance rule: a step is refined until its residual, and the estimated error of its
per-layer allocations, are within what the step and the run's budget allow
(docs/concepts.md, "When a step is accepted")."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lca_core.allocator
from lca_core import FunctionBackend, Layout, ParamSpec, Tracker, open_run
from lca_core.engine.quadrature import step_tolerance
from lca_core.errors import AccuracyWarning
from lca_core.parallel import allocate_range
from lca_core.protocol import Snapshot
from lca_core.tools.report import render_report

RISE = 0.012  # the first step's loss change: L = θ_up⁵ + θ_down², separable


def separable(layers: int):
    """L(θ) = Σ_i f_i(θ_i), one parameter per layer: the exact LCA of each layer on a
    straight step is its own f_i(end) − f_i(start)."""
    powers = [5, 2, 5][:layers]

    def loss_and_grad(theta):
        return (
            float(sum(t**p for t, p in zip(theta, powers, strict=True))),
            np.array([p * t ** (p - 1) for t, p in zip(theta, powers, strict=True)]),
        )

    def exact(a, b):
        return np.array([b[i] ** p - a[i] ** p for i, p in enumerate(powers)])

    layout = Layout(tuple(ParamSpec(f"w{i}", (1,), "float64", f"l{i}", 0) for i in range(layers)))
    return loss_and_grad, exact, layout


def up_then_back(back: float = 0.5) -> list[np.ndarray]:
    """A first step that raises the loss by RISE (Simpson's first estimate leaves ~4 % of
    it, within tol), then three exact steps that take ``back`` of the rise away: the run's
    |ΔL| is small against the first step's residual."""
    h = RISE ** (1 / 5)
    down = np.sqrt(1 - back * RISE)
    points = [np.array([0.0, 1.0]), np.array([h, 1.0])]
    points += [np.array([h, v]) for v in np.linspace(1.0, down, 4)[1:]]
    return points


def track(points, loss_and_grad, layout, **options):
    tracker = Tracker(FunctionBackend(loss_and_grad, points[0], layout=layout), **options)
    results = [tracker.update(a, b) for a, b in itertools.pairwise(points)]
    return results, tracker.close()


def test_a_step_is_refined_when_its_residual_would_spend_the_runs_budget(monkeypatch):
    loss_and_grad, exact, layout = separable(2)
    points = up_then_back()
    results, summary = track(points, loss_and_grad, layout)
    assert summary.budget_used <= summary.budget and summary.unconverged_steps == 0
    assert results[0].panels > 2  # refined beyond Simpson's first estimate
    for (a, b), r in zip(itertools.pairwise(points), results, strict=True):
        # each layer within the share of the run's budget the rule allows the first step
        np.testing.assert_allclose(r.layer_lca, exact(a, b), rtol=0, atol=0.005 * RISE)
    # the same run judged by its residual against tol alone: over budget, nothing flagged
    monkeypatch.setattr(lca_core.allocator, "BUDGET_SHARE", 0.0)
    with pytest.warns(AccuracyWarning, match="over its 1 % budget"):
        _, blind = track(points, loss_and_grad, layout)
    assert blind.budget_used > 5 * blind.budget and blind.unconverged_steps == 0


def test_per_layer_errors_that_cancel_in_the_residual_are_refined():
    """Two layers move alike in opposite directions: their errors cancel in the step's
    residual, which alone would accept Simpson's first estimate."""
    loss_and_grad, exact, layout = separable(3)
    h = (4 * RISE) ** (1 / 5)
    a, b = np.array([0.0, 1.0, 0.0]), np.array([h, 0.9, -h])
    (r,), _ = track([a, b], loss_and_grad, layout)
    assert abs(r.residual) < 1e-12  # the residual sees nothing
    assert r.panels > 2
    error = np.abs(r.layer_lca - exact(a, b))
    assert error.sum() <= 1e-3 and error.max() < 0.002 * np.abs(exact(a, b)).max()


def test_simpson_keeps_its_first_estimate_where_it_is_exact():
    _, _, layout = separable(2)
    cubic = lambda t: (float(t[0] ** 3 + t[1] ** 2), np.array([3 * t[0] ** 2, 2 * t[1]]))  # noqa: E731
    (r,), _ = track([np.array([0.0, 1.0]), np.array([0.6, 0.5])], cubic, layout)
    assert r.panels == 2 and r.converged and abs(r.residual) < 1e-12


@given(
    st.floats(-5, 5),
    st.floats(-5, 5),
    st.floats(-5, 5),
    st.floats(-0.1, 0.1),
    st.floats(1e-9, 1e-2),
    st.floats(0.0, 0.5),
)
def test_the_step_tolerance_keeps_the_run_within_its_share(l0, l1, first, spent, tol, share):
    floor = 1e-6
    noise = floor * max(1, abs(l0), abs(l1))
    limit = step_tolerance(l0, l1, tol=tol, share=share, floor=floor, so_far=(first, spent))
    assert limit <= tol  # never more than asked for
    assert limit >= min(tol, noise)  # the budget never asks for less than the rounding
    if share and noise < limit < tol:  # set by the budget: the run stays within its share
        assert abs(spent) + limit == pytest.approx(share * abs(l1 - first))
    assert step_tolerance(l0, l1, tol=tol, floor=floor) == tol  # without the run: tol


def test_steps_judged_without_the_run_are_judged_again_with_it():
    """A parallel replay's workers do not know the run before their range: their steps are
    judged by tol alone, and the writer allocates again each one the run's budget refuses,
    giving the run a sequential replay gives."""
    loss_and_grad, _, layout = separable(2)
    points = up_then_back()
    sequential, _ = track(points, loss_and_grad, layout)
    backend = FunctionBackend(loss_and_grad, points[0], layout=layout)
    worked, _ = allocate_range(
        backend, np.stack(points), 0, 1, False, True, Tracker(backend).allocator.options
    )
    assert worked[0][1].panels == 2  # the worker kept Simpson's first estimate
    writer = Tracker(FunctionBackend(loss_and_grad, points[0], layout=layout)).allocator
    writer.start(Snapshot(points[0]))
    for point, (evals, result) in zip(points[1:], worked, strict=True):
        writer.record(Snapshot(point), evals, result, 0)
    steps = [writer.running.residuals, [r.residual for r in sequential]]
    np.testing.assert_array_equal(*steps)
    assert writer.summary().budget_used == pytest.approx(
        track(points, loss_and_grad, layout)[1].budget_used, rel=1e-12
    )


def test_a_run_over_its_budget_says_so_at_close_in_its_summary_and_report(tmp_path):
    loss_and_grad, _, layout = separable(2)
    with pytest.warns(AccuracyWarning, match="unexplained"):
        _, summary = track(
            up_then_back(), loss_and_grad, layout, max_panels=2, store=tmp_path / "run"
        )
    assert summary.over_budget
    assert str(summary).startswith("WARNING: the allocation leaves")
    html = render_report(open_run(tmp_path / "run"), frames=1, progress=False)
    assert 'class="warning">Warning: the allocation leaves' in html
    assert html.index('class="warning"') < html.index("<h2>Summary</h2>")
