"""The paper's analyses as functions returning data (each has a figure in ``lca_core.plot``).

They take a run (streamed over step chunks, never loading T × K at once) or plain arrays,
and return small dataclasses with ``to_dict()``. :func:`analyze` runs every analysis the
run has data for.
"""

from __future__ import annotations

from typing import Any

from ..run import Run
from ._source import to_jsonable
from .accuracy import Accuracy, ResidualStats, accuracy, first_order_residuals, residual_stats
from .helping import (
    HelpingFractions,
    ParameterHelping,
    counts_from_lca,
    helping_fractions,
    parameter_helping,
)
from .layers import (
    Concentration,
    LayerTotals,
    RunComparison,
    compare_runs,
    concentration,
    gini,
    layer_totals,
    neuron_totals,
    parameter_totals,
)
from .moments import Synchronization, class_synchronization, local_minima, synchronization
from .oscillations import Oscillations, RunLengths, oscillations, run_lengths
from .reconstruction import Reconstruction, loss_reconstruction
from .tails import TailMass, Tails, WeibullFit, fit_weibull, tails


def analyze(run: Run, *, seed: int = 0) -> dict[str, Any]:
    """Every analysis the run holds data for; what cannot be computed says why."""
    results: dict[str, Any] = {"summary": run.summary(), "metadata": run.metadata}
    jobs: dict[str, Any] = {
        "helping": lambda: helping_fractions(run),
        "layers": lambda: layer_totals(run),
        "reconstruction": lambda: loss_reconstruction(run),
        "accuracy": lambda: accuracy(run),
        "synchronization": lambda: synchronization(run, seed=seed),
        "parameter_helping": lambda: parameter_helping(run),
        "concentration": lambda: concentration(run),
        "tails": lambda: tails(run, seed=seed),
        "oscillations": lambda: oscillations(run),
        "class_synchronization": lambda: class_synchronization(run, seed=seed),
    }
    for name, job in jobs.items():
        try:
            results[name] = job()
        except (KeyError, ValueError) as exc:
            results[name] = {"unavailable": str(exc).strip("'\"")}
    return results


__all__ = [
    "Accuracy",
    "Concentration",
    "HelpingFractions",
    "LayerTotals",
    "Oscillations",
    "ParameterHelping",
    "Reconstruction",
    "ResidualStats",
    "RunComparison",
    "RunLengths",
    "Synchronization",
    "TailMass",
    "Tails",
    "WeibullFit",
    "accuracy",
    "analyze",
    "class_synchronization",
    "compare_runs",
    "concentration",
    "counts_from_lca",
    "first_order_residuals",
    "fit_weibull",
    "gini",
    "helping_fractions",
    "layer_totals",
    "local_minima",
    "loss_reconstruction",
    "neuron_totals",
    "oscillations",
    "parameter_helping",
    "parameter_totals",
    "residual_stats",
    "run_lengths",
    "synchronization",
    "tails",
    "to_jsonable",
]
