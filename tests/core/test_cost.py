"""Knowing the cost: the forecast after the second step, the measured time in the summary,
and ``lca estimate`` before any training."""

import itertools
import logging

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lca_core import FunctionBackend, Tracker, open_run
from lca_core.backend_kit.numpy_models import MLP
from lca_core.engine.cost import SUBSET_PAYS_FROM_SECONDS, knobs
from lca_core.tools.cli import main
from lca_core.tools.estimate import estimate
from tests.core.models import digits_like, sgd


def problem():
    x, y = digits_like(1, n=400)
    mlp = MLP((16, 12, 4))
    return x, y, mlp, sgd(mlp.loss_and_grad, mlp.init(0), 0.3, 6, x, y)


def test_a_forecast_is_logged_after_the_second_step_and_the_time_is_measured(tmp_path, caplog):
    x, y, mlp, traj = problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    tracker = Tracker(backend, tmp_path / "run")
    tracker.allocator.expected_steps = 6
    with caplog.at_level(logging.INFO, logger="lca"):
        for before, after in itertools.pairwise(traj):
            tracker.update(before, after)
            if tracker.allocator.steps == 1:
                assert tracker.allocator.forecast is None  # the first step also compiles
    forecast = tracker.allocator.forecast
    assert forecast is not None and forecast.passes_per_step == 2  # Simpson, endpoint reused
    assert forecast.steps_ahead == 4 and forecast.seconds_per_step > 0
    assert [r.message for r in caplog.records] == [str(forecast)]
    assert "4 tracked steps ahead" in str(forecast)
    # the knobs that apply: a pass of a few ms is too short for a subset to pay
    assert forecast.knobs == knobs(forecast.seconds_per_step / 2, rule="simpson")
    assert "every=k" in str(forecast) and "rule='auto'" in str(forecast)
    assert "eval_subset=0.1" not in str(forecast)  # a subset of it would not pay
    assert "eval_subset=<a training batch>, resample=True" in str(forecast)
    summary = tracker.close()
    assert summary.lca_seconds > 0 and summary.training_seconds >= 0
    assert "time in LCA" in str(summary)
    stored = open_run(tmp_path / "run").summary()
    assert stored.lca_seconds == summary.lca_seconds


SETUP = """
import numpy as np
from lca_core import FunctionBackend
from lca_core.backend_kit.numpy_models import MLP
from tests.core.models import digits_like

def setup():
    x, y = digits_like(1, n=400)
    mlp = MLP((16, 12, 4))
    return FunctionBackend(mlp.loss_and_grad, mlp.init(0), data=(x, y), layout=mlp.layout)
"""


def test_lca_estimate_times_passes_and_forecasts_each_rule(tmp_path, capsys):
    setup = tmp_path / "setup.py"
    setup.write_text(SETUP)
    assert main(["estimate", "--setup", str(setup), "--steps", "1000"]) == 0
    text = capsys.readouterr().out
    assert "one gradient pass over 400 examples" in text
    for rule in ("auto", "simpson", "trapezoid", "first_order"):
        assert any(line.startswith(rule) for line in text.splitlines()), rule
    simpson = next(line for line in text.splitlines() if line.startswith("simpson"))
    assert simpson.split()[1] == "2"
    assert main(["estimate", "--setup", str(setup), "--eval-subset", "0.25"]) == 0
    # 100 examples, rounded down to a multiple of the 16 groups (of equal size)
    assert "one gradient pass over 96 examples" in capsys.readouterr().out


def test_estimate_shows_the_resampled_designs_and_what_reaches_a_cost_ratio():
    x, y, mlp, traj = problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    result = estimate(backend, eval_subset=64, train_step_seconds=1e9, target_ratio=1.5)
    text = result.table()
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isalpha()}
    assert rows["resample=True"][1] == "1" and rows["resample='paired'"][1] == "2–3"
    assert rows["simpson"][1] == "2"
    assert "within 1.5× the training (every step): auto, simpson" in text  # all, at 1e9 s
    slow = estimate(backend, eval_subset=64, train_step_seconds=1e-9).table()
    assert "within 2× the training (every step): none of these" in slow
    whole = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    assert "resample='paired'" not in estimate(whole).table()  # no subset: no designs


def test_estimate_leaves_the_parameters_alone():
    x, y, mlp, traj = problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    before = backend.snapshot().theta.copy()
    result = estimate(backend, steps=10)
    np.testing.assert_array_equal(backend.snapshot().theta, before)
    assert result.pass_seconds > 0 and result.examples == 400


@given(
    st.floats(0, 10),
    st.sampled_from(["simpson", "auto", "trapezoid", "first_order"]),
    st.booleans(),
    st.booleans(),
)
def test_the_knobs_named_are_those_that_would_cut_the_cost(pass_seconds, rule, subset, resampled):
    found = " ".join(knobs(pass_seconds, rule=rule, subset=subset, resampled=resampled))
    assert "every=k" in found  # fewer tracked steps always cost less
    assert ("rule='auto'" in found) == (rule == "simpson")  # the others make one pass already
    # a subset pass has a grouped call's fixed cost: it pays only where a pass is long
    fraction = not subset and pass_seconds >= SUBSET_PAYS_FROM_SECONDS
    assert ("eval_subset=0.1" in found) == fraction
    # every step for one pass over a batch, unless the run resamples already
    assert ("resample=True" in found) == (not resampled)


def test_estimate_evaluates_as_a_tracked_step_does(monkeypatch):
    """A subset's passes are grouped (its error bars), a validation set is a second pass
    per point: the estimate times what tracking will pay, not a plain pass."""
    x, y, mlp, traj = problem()
    backend = FunctionBackend(
        mlp.loss_and_grad, traj[0], data=(x, y), val_data=(x[:50], y[:50]), layout=mlp.layout
    )
    calls = []
    evaluate = backend.evaluate

    def recorded(thetas, *, state=None, split="train", per_class=False):
        calls.append((split, per_class))
        return evaluate(thetas, state=state, split=split, per_class=per_class)

    monkeypatch.setattr(backend, "evaluate", recorded)
    result = estimate(backend, eval_subset=0.5, repeats=2)
    # the full set first (to compare), then the subset as tracking evaluates it
    assert calls == [("train", False), ("val", False)] * 3 + [("train", True), ("val", False)] * 3
    assert result.full_pass_seconds > 0 and "so the subset costs" in result.table()
    assert result.splits == 2 and result.groups == backend.subset["groups"]
    simpson = next(line for line in result.table().splitlines() if line.startswith("simpson"))
    assert simpson.split()[1] == "4"  # two points, each on both splits
    assert f"in {result.groups} groups" in result.table()


FORECAST_SCRIPT = """
import itertools, sys
from lca_core import FunctionBackend, Tracker
from tests.core.test_cost import problem

x, y, mlp, traj = problem()
backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
tracker = Tracker(backend, progress=sys.argv[1] == "bar")
for before, after in itertools.pairwise(traj):
    tracker.update(before, after)
print("TRAINING DONE", file=sys.stderr, flush=True)
tracker.close()
"""


def test_the_forecast_is_shown_once_without_any_logging_setup(tmp_path):
    """A plain script configures no logging: the forecast still reaches the user, once, on
    standard error — with a progress bar, after the bar instead of through it."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "loop.py"
    script.write_text(FORECAST_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    for mode in ("plain", "bar"):
        out = subprocess.run(
            [sys.executable, str(script), mode], cwd=root, capture_output=True, text=True,
            check=True, env={**__import__("os").environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        lines = [line for line in out.stderr.splitlines() if "LCA costs" in line]
        assert len(lines) == 1, out.stderr
        done = out.stderr.index("TRAINING DONE")
        at = out.stderr.index("LCA costs")
        assert (at < done) if mode == "plain" else (at > done), out.stderr
