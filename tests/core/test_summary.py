"""What a summary says in words: never 'nan %' or a rounded-away budget, a readable repr."""

import numpy as np

from lca_core.engine.summary import percent, summarize


def _summary(losses, residuals, budget=0.01):
    steps = len(residuals)
    return summarize(
        losses=np.asarray(losses, dtype=float),
        layer_lca=np.full((steps, 2), -0.1),
        residuals=np.asarray(residuals, dtype=float),
        drift=np.zeros(steps),
        converged=np.ones(steps, bool),
        layer_counts=np.ones((steps, 2, 3), np.int64),
        layers=["fc0", "fc1"],
        budget=budget,
    )


def test_a_run_whose_loss_did_not_change_says_so_instead_of_nan():
    text = str(_summary([1.0, 1.2, 1.0], [1e-4, -2e-4]))
    assert "nan" not in text.lower()
    assert "undefined: ΔL = 0" in text


def test_a_small_budget_is_not_rounded_to_zero():
    summary = _summary([1.0, 0.5], [-1e-9])
    line = next(line for line in str(summary).splitlines() if line.startswith("budget used"))
    assert "0.000 %" not in line and "2.0e-07 %" in line
    assert percent(0.0) == "0.000 %" and percent(0.0123) == "1.230 %"


def test_the_repr_is_one_readable_line():
    text = repr(_summary([1.0, 0.5], [1e-3]))
    assert text.startswith("Summary(steps=1, loss_change=-0.5")
    assert "mappingproxy" not in text and "'fc0': -0.1" in text and "\n" not in text
