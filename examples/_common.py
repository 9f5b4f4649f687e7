"""What the examples share: the bundled digits, split once, and the command line."""

from __future__ import annotations

import argparse
import tempfile

import numpy as np


def digits(n_eval: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (no download): training set, evaluation set."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[n_eval:], y[n_eval:], x[:n_eval], y[:n_eval]


def arguments(doc: str, steps: int = 60) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--out", default=None, help="run directory (default: a new temp dir)")
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    args = parser.parse_args()
    args.out = args.out or tempfile.mkdtemp(prefix="lca-example-") + "/run"
    return args
