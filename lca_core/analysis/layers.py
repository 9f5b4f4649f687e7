"""Where learning happened: per-layer and per-neuron totals, concentration, across runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..engine.uncertainty import sum_stderr
from ..layout import Layout
from ..storage.run import Run
from ._source import DEFAULT_CHUNK, Result, Source, param_blocks


@dataclass
class LayerTotals(Result):
    """Per-layer LCA summed over training (Fig 4), over windows, and cumulatively."""

    layers: list[str]
    totals: np.ndarray  # (L,)
    cumulative: np.ndarray  # (T, L)
    windows: list[tuple[int, int]]
    window_totals: np.ndarray  # (n_windows, L)
    #: on a subset: the standard error of each total (of each window's) as an estimate
    #: of the full set's, for the run's design (:func:`sum_stderr`)
    stderr: np.ndarray | None = None
    window_stderr: np.ndarray | None = None


def layer_sum_stderr(run: Run, start: int = 0, stop: int | None = None) -> np.ndarray | None:
    """Standard error of each layer's LCA summed over steps [start, stop), as an estimate
    of the full set's: √Σ se² for independent (paired) steps, with the covariance of
    adjacent steps for shared ends, Σ se (a bound: its steps may be correlated up to
    fully) on one fixed subset. None for a run on the whole set."""
    design = run.design
    if design is None or not run.has("layer_lca_stderr"):
        return None
    window = slice(start, stop)
    se = run.layer_lca_stderr[window]
    cov = run.array("layer_lca_cov_prev")[window] if run.has("layer_lca_cov_prev") else None
    return sum_stderr(se, design, cov)


def layer_totals(
    source: Run | np.ndarray,
    layers: Sequence[str] | None = None,
    windows: Sequence[tuple[int, int]] = (),
) -> LayerTotals:
    """``source``: a run or a (T, L) array of per-layer LCA; windows are [start, stop)."""
    if isinstance(source, Run):
        layer_lca, names = source.layer_lca, source.layers
    else:
        layer_lca = np.asarray(source, dtype=np.float64)
        names = (
            list(layers) if layers is not None else [f"layer{j}" for j in range(layer_lca.shape[1])]
        )
    wins = [(int(a), int(b)) for a, b in windows]
    stderr = window_stderr = None
    if isinstance(source, Run) and (stderr := layer_sum_stderr(source)) is not None:
        window_stderr = np.array([layer_sum_stderr(source, a, b) for a, b in wins])
        window_stderr = window_stderr.reshape(len(wins), layer_lca.shape[1])
    return LayerTotals(
        layers=list(names),
        totals=layer_lca.sum(axis=0),
        cumulative=np.cumsum(layer_lca, axis=0),
        windows=wins,
        window_totals=np.array([layer_lca[a:b].sum(axis=0) for a, b in wins]).reshape(
            len(wins), layer_lca.shape[1]
        ),
        stderr=stderr,
        window_stderr=window_stderr,
    )


def parameter_totals(source: Source, chunk_steps: int = DEFAULT_CHUNK) -> np.ndarray:
    """Σ_t A[t, i] for every parameter, (K,), streamed."""
    total = None
    for block in param_blocks(source, chunk_steps=chunk_steps):
        s = block.sum(axis=0)
        total = s if total is None else total + s
    if total is None:
        raise ValueError("no steps to analyse")
    return total


def neuron_totals(source: Source, name: str, layout: Layout | None = None) -> np.ndarray:
    """LCA of one parameter summed over training and over all axes but its neuron axis."""
    layout = layout or (source.layout if isinstance(source, Run) else None)
    if layout is None:
        raise ValueError("neuron_totals needs the layout for a plain array")
    spec = layout.param(name)
    values = parameter_totals(source)[layout.slice_of(name)].reshape(spec.shape)
    if spec.neuron_axis is None:
        return values.reshape(1)
    axes = tuple(a for a in range(values.ndim) if a != spec.neuron_axis)
    return values.sum(axis=axes)


@dataclass
class Concentration(Result):
    """How concentrated learning is over parameters (totals over training).

    ``gini`` is the Gini coefficient of |Σ_t A_i|; ``top_share[x]`` is the share of all
    helping (Σ of negative totals) done by the x % most helpful parameters.
    """

    gini: float
    top_share: dict[float, float]
    n_params: int


def gini(values: np.ndarray) -> float:
    x = np.sort(np.abs(np.asarray(values, dtype=np.float64)))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(2.0 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def concentration(source: Source, top: Sequence[float] = (1.0, 10.0)) -> Concentration:
    totals = (
        source if isinstance(source, np.ndarray) and source.ndim == 1 else parameter_totals(source)
    )
    helping = np.sort(np.clip(-totals, 0.0, None))[::-1]
    all_help = helping.sum()
    shares = {}
    for pct in top:
        n = max(1, int(np.ceil(len(helping) * pct / 100.0)))
        shares[float(pct)] = float(helping[:n].sum() / all_help) if all_help else float("nan")
    return Concentration(gini=gini(totals), top_share=shares, n_params=len(totals))


@dataclass
class RunComparison(Result):
    """Per-layer totals across runs of one configuration, and whether a layer hurts."""

    layers: list[str]
    totals: np.ndarray  # (runs, L)
    mean: np.ndarray
    std: np.ndarray
    t_statistic: np.ndarray
    p_hurts: np.ndarray  # one-sided: H1 = the layer's total is > 0


def compare_runs(
    sources: Sequence[Run | np.ndarray], layers: Sequence[str] | None = None
) -> RunComparison:
    """A one-sample t-test per layer of "this layer's total LCA is positive" (it hurts)."""
    if len(sources) < 2:
        raise ValueError("comparing runs needs at least two runs of the same configuration")
    totals = []
    names: list[str] | None = list(layers) if layers is not None else None
    for s in sources:
        result = layer_totals(s, layers=names)
        if names is not None and result.layers != names:
            raise ValueError(f"runs have different layers: {result.layers} vs {names}")
        names = result.layers
        totals.append(result.totals)
    arr = np.array(totals)
    test = stats.ttest_1samp(arr, 0.0, axis=0, alternative="greater")
    return RunComparison(
        layers=list(names or []),
        totals=arr,
        mean=arr.mean(axis=0),
        std=arr.std(axis=0, ddof=1),
        t_statistic=np.asarray(test.statistic, dtype=np.float64),
        p_hurts=np.asarray(test.pvalue, dtype=np.float64),
    )


@dataclass
class Generalization(Result):
    """Per layer: Σ LCA of the evaluation loss and of the validation loss (paper §4's use
    of validation LCA: which layers' learning carries over, which overfit)."""

    layers: list[str]
    train: np.ndarray  # (L,)
    validation: np.ndarray  # (L,)
    carried_over: np.ndarray  # (L,) validation ÷ train: the share that generalised


def generalization(run: Run) -> Generalization:
    """Needs a run recorded with ``val_data``."""
    train = run.layer_lca.sum(axis=0)
    validation = run.array("val_layer_lca").sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        carried = np.where(train != 0, validation / train, np.nan)
    return Generalization(list(run.layers), train, validation, carried)
