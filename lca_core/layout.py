"""The layout of a model's trainable parameters as one flat float vector.

Every backend maps its parameters to a flat vector θ ∈ R^K in layout order; the core sees
flat vectors (numpy, or a framework's arrays on their device: :mod:`lca_core.arrays`), so
allocation, storage and analysis are framework-free.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .arrays import kernels, on_host
from .errors import LayoutMismatchError


@dataclass(frozen=True)
class ParamSpec:
    """One trainable parameter: where it lives in θ and which layer owns it.

    ``neuron_axis`` is the axis that indexes output neurons / channels (None for scalars),
    so analyses can sum a parameter's LCA per neuron.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer: str
    neuron_axis: int | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layer": self.layer,
            "neuron_axis": self.neuron_axis,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamSpec:
        return cls(
            name=str(d["name"]),
            shape=tuple(int(s) for s in d["shape"]),
            dtype=str(d["dtype"]),
            layer=str(d["layer"]),
            neuron_axis=None if d.get("neuron_axis") is None else int(d["neuron_axis"]),
        )


@dataclass(frozen=True)
class Layout:
    """An ordered tuple of :class:`ParamSpec`; θ is their concatenation, each raveled in C order."""

    params: tuple[ParamSpec, ...]
    _names: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise LayoutMismatchError(f"parameter names must be unique; repeated: {dup}")
        if not names or sum(p.size for p in self.params) == 0:
            raise LayoutMismatchError(
                "the model has no trainable parameters; nothing can be allocated "
                "(check requires_grad / trainable flags)"
            )
        object.__setattr__(self, "_names", {n: i for i, n in enumerate(names)})

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], dtype: str = "float64") -> Layout:
        """A layout with one layer per parameter (handy for plain numpy models)."""
        return cls(
            tuple(
                ParamSpec(name, tuple(shape), dtype, name, 0 if len(shape) else None)
                for name, shape in shapes.items()
            )
        )

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start of each parameter in θ, plus the total size at the end."""
        return np.concatenate([[0], np.cumsum([p.size for p in self.params])]).astype(np.int64)

    @cached_property
    def layers(self) -> tuple[str, ...]:
        """Layer names in order of first appearance."""
        return tuple(dict.fromkeys(p.layer for p in self.params))

    @cached_property
    def param_layer(self) -> np.ndarray:
        """For each parameter, the index of its layer in :attr:`layers`."""
        index = {name: i for i, name in enumerate(self.layers)}
        return np.array([index[p.layer] for p in self.params], dtype=np.int64)

    @cached_property
    def layer_sizes(self) -> np.ndarray:
        """Parameters in each layer of :attr:`layers` (from the specs: no K-long array)."""
        return np.bincount(self.param_layer, weights=np.diff(self.offsets)).astype(np.int64)

    def param(self, name: str) -> ParamSpec:
        try:
            return self.params[self._names[name]]
        except KeyError:
            raise KeyError(
                f"no parameter named {name!r}; parameters: {list(self._names)}"
            ) from None

    def slice_of(self, name: str) -> slice:
        i = self._names[name]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def layer_params(self, layer: str) -> tuple[ParamSpec, ...]:
        found = tuple(p for p in self.params if p.layer == layer)
        if not found:
            raise KeyError(f"no layer named {layer!r}; layers: {list(self.layers)}")
        return found

    @cached_property
    def _layer_starts(self) -> np.ndarray | None:
        """Where each layer starts in θ when every layer's parameters are consecutive and
        non-empty (the usual case: one reduceat does the whole reduction), else None."""
        first = np.r_[True, self.param_layer[1:] != self.param_layer[:-1]]
        runs = self.param_layer[first]
        sizes = np.diff(self.offsets)
        layer_sizes = np.bincount(self.param_layer, weights=sizes, minlength=len(self.layers))
        if (
            len(runs) != len(self.layers)
            or np.any(runs != np.arange(len(self.layers)))
            or np.any(layer_sizes == 0)
        ):
            return None
        return self.offsets[:-1][first]

    @cached_property
    def _layer_spans(self) -> list[tuple[int, int]] | None:
        """(start, stop) of each layer in θ where :attr:`_layer_starts` exists."""
        if self._layer_starts is None:
            return None
        bounds = [*self._layer_starts.tolist(), self.size]
        return list(itertools.pairwise(bounds))

    @cached_property
    def _layer_members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.param_layer == j) for j in range(len(self.layers))]

    def reduce_by_param(self, values: np.ndarray, dtype: Any = None) -> np.ndarray:
        """Sum a (..., K) array over each parameter's coordinates → (..., n_params), in
        ``dtype`` (default: the values'; int64 counts a boolean array)."""
        nonempty = np.diff(self.offsets) > 0  # reduceat mishandles empty segments
        out = np.zeros((*values.shape[:-1], len(self.params)), dtype=dtype or values.dtype)
        starts = self.offsets[:-1][nonempty]
        out[..., nonempty] = np.add.reduceat(values, starts, axis=-1, dtype=dtype)
        return out

    @cached_property
    def _device_spans(self) -> tuple[tuple[int, ...], bool]:
        """The bounds a device array is reduced over: the layers' where they are
        consecutive (True), else the parameters' (False: grouped by layer on the host)."""
        if self._layer_starts is not None:
            return (*self._layer_starts.tolist(), self.size), True
        return tuple(self.offsets.tolist()), False

    def _by_layer_of_spans(self, sums: np.ndarray, axis: int = -1) -> np.ndarray:
        """Sums over :attr:`_device_spans` (along ``axis``) as sums by layer."""
        if self._device_spans[1]:
            return sums
        sums = np.moveaxis(sums, axis, -1)
        by_layer = np.stack([sums[..., m].sum(axis=-1) for m in self._layer_members], axis=-1)
        return np.moveaxis(by_layer, -1, axis)

    def reduce_by_layer(self, values: np.ndarray, dtype: Any = None) -> np.ndarray:
        """Sum a (..., K) array over each layer's coordinates → (..., n_layers); a device
        array's sums are float64 on the host."""
        if not on_host(values):  # reduced on its device, only the sums moved
            bounds = self._device_spans[0]
            return self._by_layer_of_spans(kernels(values).segment_sums(values, bounds))
        # no BLAS here: it would wake OpenBLAS threads that fight the framework's own pool
        if self._layer_starts is not None:
            return np.add.reduceat(values, self._layer_starts, axis=-1, dtype=dtype)
        per_param = self.reduce_by_param(values, dtype)
        return np.stack([per_param[..., m].sum(axis=-1) for m in self._layer_members], axis=-1)

    def count_by_layer(self, mask: np.ndarray) -> np.ndarray:
        """True entries of a (..., K) boolean array in each layer → (..., n_layers) int64.
        A 1-D mask is counted span by span (``count_nonzero`` on booleans, faster than a
        reduction that casts every element to int64 first: benchmarks/README.md)."""
        spans = self._layer_spans
        if mask.ndim != 1 or spans is None:
            return self.reduce_by_layer(mask, np.int64)
        return np.array([np.count_nonzero(mask[a:b]) for a, b in spans], dtype=np.int64)

    def split(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a flat vector, one per parameter, in its shape."""
        self.check_vector(theta, "vector")
        return {
            p.name: theta[self.offsets[i] : self.offsets[i + 1]].reshape(p.shape)
            for i, p in enumerate(self.params)
        }

    def check_vector(self, vec: np.ndarray, what: str) -> None:
        if vec.ndim != 1 or vec.shape[0] != self.size:
            raise LayoutMismatchError(
                f"{what} has shape {tuple(vec.shape)} but the layout holds {self.size} values "
                f"in {len(self.params)} parameters; did the model's trainable parameters change "
                "between steps (a layer frozen, added or resized)? Start a new run for a new "
                "layout."
            )

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.params]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> Layout:
        return cls(tuple(ParamSpec.from_dict(d) for d in items))


def host_dtype(dtype: Any) -> np.dtype:
    """How θ holds a parameter of ``dtype`` (numpy's, a framework's, or its name): numpy's
    own floats as they are; a narrower float numpy lacks (bfloat16, float8 — the GPU
    formats) as float32, which holds every value of them exactly."""
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:  # a framework's own (torch.bfloat16) or a name numpy does not know
        numpy_dtype = None
    name = numpy_dtype.name if numpy_dtype is not None else str(getattr(dtype, "name", dtype))
    name = name.removeprefix("torch.")
    if name in ("float16", "float32", "float64"):
        return np.dtype(name)
    if "float" in name:
        return np.dtype(np.float32)
    return np.dtype(dtype)  # anything else as numpy takes it (or refuses it)


#: the unit roundoff of each float format a parameter can have (8-bit floats: e4m3's)
_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}


def unit_roundoff(dtypes: Iterable[Any]) -> float:
    """The coarsest relative rounding among parameters of ``dtypes``: how exactly a loss
    computed with them can be known (8-bit floats: 2⁻⁴)."""
    found = 0.0
    for dtype in dtypes:
        name = str(getattr(dtype, "name", dtype)).removeprefix("torch.")
        found = max(found, _ROUNDOFF.get(name, 2.0**-4 if "float8" in name else 2.0**-53))
    return found


def common_dtype(dtypes: Iterable[Any]) -> np.dtype:
    """The one dtype of θ: the parameters' own (:func:`host_dtype`) when they share one,
    else float64 (which holds every narrower float exactly). The one definition, used by
    snapshots and store."""
    unique = {host_dtype(d) for d in dtypes}
    return unique.pop() if len(unique) == 1 else np.dtype(np.float64)


def flat_vector(arrays: Iterable[Any]) -> np.ndarray:
    """Arrays raveled and concatenated in their :func:`common_dtype`: θ as the model holds it."""
    parts = [np.asarray(a).ravel() for a in arrays]
    return np.concatenate(parts, dtype=common_dtype(p.dtype for p in parts))


def sign_counts(lca: np.ndarray, layout: Layout) -> np.ndarray:
    """(…, K) allocations → (…, layers, 3) parameters that helped (A < 0), hurt (A > 0) and
    were zero: the one definition of the counts behind every helped / hurt share."""
    if not on_host(lca):  # counted on its device, only the counts moved
        both = kernels(lca).sign_counts(lca, layout._device_spans[0])  # (…, spans, 2)
        helped, hurt = (layout._by_layer_of_spans(both[..., i]) for i in (0, 1))
    else:
        helped = layout.count_by_layer(lca < 0)
        hurt = layout.count_by_layer(lca > 0)
    # np.array, not np.stack: one C call where np.stack is a Python function of many (it
    # is a measurable part of a small model's step)
    counts = np.array([helped, hurt, layout.layer_sizes - helped - hurt])
    return counts.transpose(*range(1, counts.ndim), 0)


def shares(counts: np.ndarray) -> tuple[float, float, float, float]:
    """% helped, hurt, zero, and helped among the non-zero, from (…, 3) sign counts.

    The one definition of these numbers: NaN where there is nothing to count.
    """
    helped, hurt, zero = (int(c) for c in np.asarray(counts).reshape(-1, 3).sum(axis=0))
    total, nonzero = helped + hurt + zero, helped + hurt
    return _pct(helped, total), _pct(hurt, total), _pct(zero, total), _pct(helped, nonzero)


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else float("nan")
