"""What the framework benchmarks share: the two cases and the ratio table."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np

HEADER = ["case", "pass ms", "LCA step ms", "mean panels", "ratio", "ratio range"]
#: independent measurements per case (each a fresh model and tracker): their spread is the
#: machine's noise, which a single median hides
REPEATS = 3


def cases(quick: bool) -> list[tuple[str, tuple[int, ...], np.ndarray, np.ndarray]]:
    """The demo model on digits, and 784-100-50-10 on generated MNIST-sized data."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = 12_000 if quick else 60_000
    rng = np.random.default_rng(0)
    gx = rng.normal(size=(n, 784)).astype(np.float32)
    gy = (gx[:, :10].argmax(1) + (gx[:, 10] > 1)) % 10
    return [
        ("digits MLP 64-100-50-10, N=1797", (64, 100, 50, 10), (x / 16).astype(np.float32), y),
        (f"MLP 784-100-50-10, N={n}", (784, 100, 50, 10), gx, gy),
    ]


def timings(
    passes: list[float], lca: list[float], panels: list[int], warmup: int = 2
) -> dict[str, float]:
    """Medians after the first ``warmup`` passes (compilation, tracing)."""
    return {
        "pass": statistics.median(passes[warmup:]),
        "lca": statistics.median(lca),
        "panels": statistics.mean(panels),
    }


def ratio_rows(
    measure: Callable[..., dict], quick: bool, steps: int, label_dtype: type = np.int64
) -> list[list[str]]:
    """One row per case, over :data:`REPEATS` measurements: median pass, median LCA step,
    panels, the median of LCA ÷ (panels × pass) and its range."""
    rows = []
    for name, sizes, x, y in cases(quick):
        runs = [measure(sizes, x, y.astype(label_dtype), steps) for _ in range(REPEATS)]
        rows.append(ratio_row(name, runs))
    return rows


def ratio_row(name: str, runs: list[dict[str, float]]) -> list[str]:
    """A table row from repeated :func:`timings`: medians, and the ratio normalised by the
    passes made (new nodes = panels, the endpoint reused) as median and min–max."""
    ratios = [m["lca"] / (m["panels"] * m["pass"]) for m in runs]
    return [
        name,
        f"{1e3 * statistics.median(m['pass'] for m in runs):.2f}",
        f"{1e3 * statistics.median(m['lca'] for m in runs):.2f}",
        f"{statistics.mean(m['panels'] for m in runs):.2f}",
        f"{statistics.median(ratios):.3f}",
        f"{min(ratios):.3f}–{max(ratios):.3f}",
    ]
