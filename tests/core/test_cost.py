"""Knowing the cost: the forecast after the second step, the measured time in the summary,
and ``lca estimate`` before any training."""

import itertools
import logging

import numpy as np

from lca_core import FunctionBackend, Tracker, open_run
from lca_core.cli import main
from lca_core.numpy_models import MLP
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
    assert "eval_subset" in str(forecast) and "4 tracked steps ahead" in str(forecast)
    summary = tracker.close()
    assert summary.lca_seconds > 0 and summary.training_seconds >= 0
    assert "time in LCA" in str(summary)
    stored = open_run(tmp_path / "run").summary()
    assert stored.lca_seconds == summary.lca_seconds


SETUP = """
import numpy as np
from lca_core import FunctionBackend
from lca_core.numpy_models import MLP
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
    assert "one gradient pass over 100 examples" in capsys.readouterr().out


def test_estimate_leaves_the_parameters_alone():
    from lca_core.estimate import estimate

    x, y, mlp, traj = problem()
    backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
    before = backend.snapshot().theta.copy()
    result = estimate(backend, steps=10)
    np.testing.assert_array_equal(backend.snapshot().theta, before)
    assert result.pass_seconds > 0 and result.examples == 400
