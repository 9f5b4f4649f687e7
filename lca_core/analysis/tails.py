"""Heavy tails of the LCA distribution: tail mass vs a Gaussian, and a Weibull fit (Fig S10)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import InsufficientDataError
from ._source import DEFAULT_CHUNK, Result, Source, param_blocks


@dataclass
class TailMass(Result):
    """Fraction of nonzero LCA values beyond k standard deviations, vs a Gaussian."""

    k: list[float]
    observed: list[float]
    gaussian: list[float]
    ratio: list[float]
    std: float
    n: int


@dataclass
class WeibullFit(Result):
    """Maximum-likelihood Weibull (location 0) of magnitudes; KS goodness of fit."""

    shape: float
    scale: float
    ks_statistic: float
    ks_pvalue: float
    n: int


@dataclass
class Tails(Result):
    tail_mass: TailMass
    helping: WeibullFit | None
    hurting: WeibullFit | None


def fit_weibull(magnitudes: np.ndarray) -> WeibullFit:
    """Fit on magnitudes scaled by their median (LCA values are tiny; this keeps the
    optimiser well conditioned), then scale back."""
    x = np.asarray(magnitudes, dtype=np.float64)
    x = x[x > 0]
    if len(x) < 10:
        raise ValueError(f"a Weibull fit needs at least 10 nonzero values, got {len(x)}")
    unit = float(np.median(x))
    shape, _, scale = stats.weibull_min.fit(x / unit, floc=0.0)
    ks = stats.kstest(x / unit, stats.weibull_min(shape, 0.0, scale).cdf)
    return WeibullFit(
        float(shape), float(scale * unit), float(ks.statistic), float(ks.pvalue), len(x)
    )


def tails(
    source: Source,
    ks: Sequence[float] = (2.0, 3.0, 4.0, 5.0),
    max_samples: int = 100_000,
    seed: int = 0,
    chunk_steps: int = DEFAULT_CHUNK,
) -> Tails:
    """Two streamed passes: moments, then tail counts and a uniform sample for the fits."""
    n, total, total_sq = 0, 0.0, 0.0
    for block in param_blocks(source, chunk_steps=chunk_steps):
        nz = block[block != 0]
        n += nz.size
        total += nz.sum()
        total_sq += np.square(nz).sum()
    if n == 0:
        raise InsufficientDataError("every LCA value is zero: nothing to analyse")
    mean = total / n
    std = float(np.sqrt(max(total_sq / n - mean**2, 0.0)))
    rng = np.random.default_rng(seed)
    keep = min(1.0, max_samples / n)
    beyond = np.zeros(len(ks))
    samples = []
    for block in param_blocks(source, chunk_steps=chunk_steps):
        nz = block[block != 0]
        dev = np.abs(nz - mean)
        beyond += [(dev > k * std).sum() for k in ks]
        samples.append(nz[rng.random(nz.size) < keep])
    sample = np.concatenate(samples)
    observed = (beyond / n).tolist()
    gaussian = [float(2 * stats.norm.sf(k)) for k in ks]
    mass = TailMass(
        k=[float(k) for k in ks],
        observed=observed,
        gaussian=gaussian,
        ratio=[o / g for o, g in zip(observed, gaussian, strict=True)],
        std=std,
        n=n,
    )

    def fit(values: np.ndarray) -> WeibullFit | None:
        return fit_weibull(values) if np.count_nonzero(values) >= 10 else None

    return Tails(mass, helping=fit(-sample[sample < 0]), hurting=fit(sample[sample > 0]))
