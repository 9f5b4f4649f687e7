"""The paper's analyses as functions returning data (each has a figure in ``lca_core.plot``).

They take a run (streamed over step chunks, never loading T × K at once) or plain arrays,
and return small dataclasses with ``to_dict()``. :func:`analyze` runs every analysis of the
catalog (:mod:`.catalog`) the run has data for.
"""

from __future__ import annotations

from ._source import to_jsonable
from .accuracy import Accuracy, ResidualStats, accuracy, first_order_residuals, residual_stats
from .catalog import ANALYSES, Analysis, analyze, format_analysis
from .helping import (
    HelpingFractions,
    ParameterHelping,
    counts_from_lca,
    helping_fractions,
    parameter_helping,
)
from .layers import (
    Concentration,
    Generalization,
    LayerTotals,
    RunComparison,
    compare_runs,
    concentration,
    generalization,
    gini,
    layer_sum_stderr,
    layer_totals,
    neuron_totals,
    parameter_totals,
)
from .moments import Synchronization, class_synchronization, local_minima, synchronization
from .oscillations import Oscillations, RunLengths, oscillations, run_lengths
from .parts import OptimizerParts, PartComparison, compare_parts, optimizer_parts
from .reconstruction import Reconstruction, loss_reconstruction
from .tails import TailMass, Tails, WeibullFit, fit_weibull, tails

__all__ = [
    "ANALYSES",
    "Accuracy",
    "Analysis",
    "Concentration",
    "Generalization",
    "HelpingFractions",
    "LayerTotals",
    "OptimizerParts",
    "Oscillations",
    "ParameterHelping",
    "PartComparison",
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
    "compare_parts",
    "compare_runs",
    "concentration",
    "counts_from_lca",
    "first_order_residuals",
    "fit_weibull",
    "format_analysis",
    "generalization",
    "gini",
    "helping_fractions",
    "layer_sum_stderr",
    "layer_totals",
    "local_minima",
    "loss_reconstruction",
    "neuron_totals",
    "optimizer_parts",
    "oscillations",
    "parameter_helping",
    "parameter_totals",
    "residual_stats",
    "run_lengths",
    "synchronization",
    "tails",
    "to_jsonable",
]
