"""Uniform access to LCA data held in a run store or in plain arrays, streamed by steps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np

from ..storage.run import Run

Source = Run | np.ndarray
DEFAULT_CHUNK = 64


def param_blocks(
    source: Source, name: str = "param_lca", chunk_steps: int = DEFAULT_CHUNK
) -> Iterator[np.ndarray]:
    """(n, K) blocks of a per-step, per-parameter array, never the whole T × K at once."""
    if isinstance(source, Run):
        for _, block in source.iter_array(name, chunk_steps):
            yield np.asarray(block, dtype=np.float64)
        return
    arr = np.asarray(source)
    if arr.ndim != 2:
        raise ValueError(f"expected a (steps, parameters) array, got shape {arr.shape}")
    for start in range(0, len(arr), chunk_steps):
        yield np.asarray(arr[start : start + chunk_steps], dtype=np.float64)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, numpy arrays and scalars → plain JSON types (NaN/inf → None)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class Result:
    """Mixin for analysis results: ``to_dict()`` gives JSON-ready data."""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)
