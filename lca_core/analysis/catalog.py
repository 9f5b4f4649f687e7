"""The one list of analyses: what each needs, computes, prints and draws.

``analyze`` (the CLI's ``lca analyze``), the terminal text and ``lca report`` all iterate
:data:`ANALYSES`, so an analysis is added in one place. Each one declares the run arrays it
needs (as Cockpit's instruments declare theirs); what a run lacks is reported with the
option that records it, before anything is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InsufficientDataError
from ..storage.run import Run
from ..storage.store import recorded_by
from . import text
from .accuracy import accuracy
from .helping import helping_fractions, parameter_helping
from .layers import concentration, generalization, layer_totals
from .moments import class_synchronization, synchronization
from .oscillations import oscillations
from .parts import optimizer_parts
from .reconstruction import loss_reconstruction
from .tails import tails


@dataclass(frozen=True)
class Analysis:
    """One analysis: its key in ``analyze()``'s results, its section title, the arrays it
    needs (all of ``requires``, at least one of ``any_of``), how it is computed from a run
    (``seed`` for the random baselines), and rendered as text (its figures are in
    :data:`lca_core.plot.figures.FIGURES`, under its key)."""

    key: str
    title: str
    compute: Callable[[Run, int], Any] | None
    requires: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    text: Callable[[Any], list[str]] | None = None
    #: why a run on resampled subsets cannot give it (None: it can, per layer)
    not_resampled: str | None = None

    def missing(self, run: Run) -> str | None:
        """Why the run cannot give this analysis (None when it can)."""
        if not run.steps:
            return "the run has no allocated step (replay a recorded run first)"
        if self.not_resampled is not None and run.design in ("shared", "paired"):
            return f"not for a run on resampled subsets: {self.not_resampled}"
        absent = [name for name in self.requires if not run.has(name)]
        if self.any_of and not any(run.has(name) for name in self.any_of):
            absent.append(" or ".join(self.any_of))
        if not absent:
            return None
        options = [how for name in absent for n in name.split(" or ") if (how := recorded_by(n))]
        how = f"; record the run with {' and/or '.join(options)}" if options else ""
        return f"needs {', '.join(absent)}, which this run did not store{how}"


#: why the per-parameter analyses refuse a resampled run
PER_PARAMETER = (
    "each step's per-parameter values are unbiased but noisy estimates, whose signs and "
    "sizes are mostly the subset's noise (per layer, the totals carry error bars: layers)"
)

ANALYSES: tuple[Analysis, ...] = (
    Analysis(
        "reconstruction",
        "Loss reconstruction",
        lambda run, _: loss_reconstruction(run),
        text=text.reconstruction,
        not_resampled="its stored losses are each point's own subset's; the summary's run "
        "check compares Σ LCA with the full set's loss",
    ),
    Analysis(
        "helping",
        "Helping per layer (% of parameter-steps)",
        lambda run, _: helping_fractions(run),
        text=text.helping,
        not_resampled=PER_PARAMETER,
    ),
    Analysis(
        "layers",
        "Total LCA per layer",
        lambda run, _: layer_totals(run),
        text=text.layer_totals,
    ),
    Analysis(
        "generalization",
        "Evaluation vs validation LCA per layer (which layers generalise)",
        lambda run, _: generalization(run),
        requires=("val_layer_lca",),
        text=text.generalization,
    ),
    Analysis(
        "optimizer_parts",
        "What moved each layer: gradient, momentum, weight decay",
        lambda run, _: optimizer_parts(run),
        requires=("part_layer_lca",),
        text=text.optimizer_parts,
    ),
    Analysis(
        "parameter_helping",
        "Fraction of steps each parameter helped",
        lambda run, _: parameter_helping(run),
        requires=("param_lca",),
        text=text.parameter_helping,
        not_resampled=PER_PARAMETER,
    ),
    Analysis(
        "concentration",
        "Concentration of learning",
        lambda run, _: concentration(run),
        requires=("param_lca",),
        text=text.concentration,
        not_resampled=PER_PARAMETER,
    ),
    Analysis(
        "tails",
        "Tails (nonzero LCA values)",
        lambda run, seed: tails(run, seed=seed),
        requires=("param_lca",),
        text=text.tails,
        not_resampled=PER_PARAMETER,
    ),
    Analysis(
        "oscillations",
        "Oscillations (mean steps between changes of sign)",
        lambda run, _: oscillations(run),
        any_of=("theta", "grads"),
        text=text.oscillations,
        not_resampled=PER_PARAMETER,
    ),
    Analysis(
        "synchronization",
        "Synchronised moments of learning (layers)",
        lambda run, seed: synchronization(run, seed=seed),
        text=text.synchronization,
        not_resampled="the local minima of each step's resampled estimate are mostly its noise's",
    ),
    Analysis(
        "class_synchronization",
        "Synchronised moments of learning within each class",
        lambda run, seed: class_synchronization(run, seed=seed),
        requires=("class_layer_lca",),
        text=text.class_synchronization,
    ),
    Analysis(
        "accuracy",
        "Accuracy",
        lambda run, _: accuracy(run),
        text=text.accuracy,
        not_resampled="the accuracy of a run on resampled subsets is the summary's run "
        "check against the full set's loss change",
    ),
    Analysis(
        "heatmaps",
        "Per-parameter LCA",
        None,
        requires=("param_lca",),
        not_resampled=PER_PARAMETER,
    ),
)


def unavailable(reason: str) -> dict[str, str]:
    """The result of an analysis the run cannot give: why, and how to record it."""
    return {"unavailable": reason}


def analyze(run: Run, *, seed: int = 0) -> dict[str, Any]:
    """Every analysis the run holds data for; what cannot be computed says why."""
    results: dict[str, Any] = {"summary": run.summary(), "metadata": run.metadata}
    for a in ANALYSES:
        if a.compute is None:
            continue
        reason = a.missing(run)
        if reason is not None:
            results[a.key] = unavailable(reason)
            continue
        try:
            results[a.key] = a.compute(run, seed)
        except InsufficientDataError as exc:
            results[a.key] = unavailable(str(exc))
    return results


def format_analysis(results: dict[str, Any]) -> str:
    """One section per analysis; an unavailable one says what it needs."""
    out = ["== Summary", str(results["summary"])]
    for a in ANALYSES:
        value = results.get(a.key)
        if a.text is None or value is None:
            continue
        out.append(f"\n== {a.title}")
        if isinstance(value, dict) and "unavailable" in value:
            out.append(f"  not available: {value['unavailable']}")
        else:
            out.extend(a.text(value))
    return "\n".join(out)
