"""The core's K-long arithmetic on any array: numpy on the host, or a framework's arrays
where its gradients are (DESIGN §10).

Everything the core does with a K-long vector — quadrature nodes, weighted gradient sums,
A = Δ ⊙ ḡ, per-layer sums, sign counts, finiteness — goes through :class:`Kernels`,
written once against the Python array API: ``array-api-compat`` dispatches on the array's
type, so a backend that hands the core torch tensors keeps them on their device, and
numpy stays the reference. Only reductions (O(parameters) numbers) cross to the host, in
float64. A framework whose eager operations move their operands from the host (JAX: a
Python scalar, a slice's bounds) registers compiled kernels for its arrays
(:func:`register_kernels`), so a step moves nothing to the device.

On a device the K-long vectors keep the parameters' dtype (at least float32: the
gradients' own precision), and every sum over them is float64-accurate: summed in
float64 where the device has it, compensated where it has not (JAX without
``jax_enable_x64``, Apple's MPS: :func:`compensated_sum`), so its error does not grow
with K. The host path is numpy float64 throughout, the reference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

#: where the core's K-long arithmetic runs: on the gradients' device where the backend
#: can keep it there ("auto", "device"), or in numpy float64 on the host ("host")
ARITHMETIC: tuple[str, ...] = ("auto", "device", "host")


def check_arithmetic(value: str, *, device: bool, backend: str) -> str:
    """``value`` resolved to "device" or "host" for a backend that can (``device``) keep the
    K-long arithmetic on its device or cannot; "device" where it cannot is refused."""
    if value not in ARITHMETIC:
        raise ValueError(f"unknown arithmetic {value!r}; choose one of {list(ARITHMETIC)}")
    if value == "device" and not device:
        raise ValueError(
            f"{backend} keeps lca's arithmetic on the host here (docs/concepts.md says why): "
            "give arithmetic='auto' or 'host'"
        )
    if value == "auto":
        return "device" if device else "host"
    return value


def on_host(x: Any) -> bool:
    """Whether ``x`` is a numpy array (or scalar): the reference path."""
    return isinstance(x, np.ndarray | np.generic)


def namespace(x: Any) -> Any:
    """The array-API namespace of ``x`` (numpy's, torch's, jax.numpy)."""
    return array_api_compat.array_namespace(x)


#: the array-API dtypes numpy holds too
_NUMPY_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64")


def to_host(x: Any, dtype: Any = None) -> np.ndarray:
    """``x`` as a numpy array, cast first where it lies (a float32 copy moves half the
    bytes of a float64 one); a dtype numpy lacks (bfloat16 in torch) as float32, exactly.
    A numpy array is returned as it is (cast where asked)."""
    if on_host(x):
        return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    xp = namespace(x)
    wanted = None if dtype is None else np.dtype(dtype)
    if wanted is not None and wanted.itemsize < getattr(x.dtype, "itemsize", 0):
        x = xp.astype(x, getattr(xp, wanted.name))  # narrowed where it lies
    if array_api_compat.is_torch_array(x):
        x = x.detach().to("cpu")
        if not any(x.dtype == getattr(xp, name) for name in _NUMPY_TYPES):
            x = xp.astype(x, xp.float32)
    host = np.asarray(x)
    return host if wanted is None else host.astype(wanted, copy=False)


def like(host: np.ndarray, template: Any) -> Any:
    """A host vector as an array of ``template``'s kind, dtype and device (one explicit
    transfer): how a stored θ joins a backend's device arithmetic (replay, conformance)."""
    if on_host(template):
        return np.asarray(host, dtype=template.dtype)
    xp = namespace(template)
    return xp.asarray(host, dtype=template.dtype, device=array_api_compat.device(template))


def float64_on_device(x: Any) -> bool:
    """Whether ``x``'s device computes in float64 (numpy always does)."""
    if on_host(x):
        return True
    info = namespace(x).__array_namespace_info__()
    return "float64" in info.dtypes(device=array_api_compat.device(x), kind="real floating")


def working_copy(theta: Any) -> Any:
    """θ as the core interpolates it: float64 on the host for a numpy θ, in θ's own dtype
    (at least float32) where it lies for a device array — K-long vectors there cost the
    parameters' bytes, and the sums over them are float64-accurate (:func:`compensated_sum`).
    Not copied where the dtype is already that (a snapshot is a copy of the model's)."""
    if on_host(theta):
        return np.asarray(theta, dtype=np.float64)
    xp = namespace(theta)
    return xp.astype(theta, xp.result_type(theta.dtype, xp.float32), copy=False)


def compensated_sum(x: Any, axis: int = -1, *, wide: bool | None = None) -> tuple[Any, Any]:
    """Σ along ``axis`` as two arrays whose float64 sum has float64's accuracy. A float64
    array is summed as it is; a narrower one in float64 where its device has float64
    (``wide``, by default found from the device), else by pairwise halving with each
    level's rounding error kept (Knuth's TwoSum) and summed with the next level's, so no
    error grows with the length."""
    xp = namespace(x)
    x = xp.moveaxis(x, axis, -1)
    if wide is None:
        wide = float64_on_device(x)
    if x.dtype == xp.float64 or wide or x.shape[-1] == 0:
        total = xp.sum(x, axis=-1, dtype=xp.float64 if wide else None)
        return total, total * 0
    error = xp.sum(x[..., :0], axis=-1)  # zeros of the right shape, made where x is
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half : 2 * half]
        total = a + b
        b_virtual = total - a
        error = error + xp.sum((a - (total - b_virtual)) + (b - b_virtual), axis=-1)
        x = total if x.shape[-1] % 2 == 0 else xp.concat([total, x[..., -1:]], axis=-1)
    return x[..., 0], error


def joined(parts: tuple[Any, Any], dtype: Any = np.float64) -> np.ndarray:
    """:func:`compensated_sum`'s two parts on the host, added in float64."""
    return to_host(parts[0], dtype) + to_host(parts[1], dtype)


class Kernels:
    """The core's operations on K-long vectors, for one kind of array: the array API's,
    eager. A framework registers a subclass whose kernels are compiled where its eager
    operations would move operands from the host (:func:`register_kernels`)."""

    def node(self, theta0: Any, s: float, delta: Any) -> Any:
        """θ_0 + sΔ in one new array (the sum added in place where arrays allow it)."""
        point = delta * s
        point += theta0
        return point

    def combine(self, terms: Sequence[tuple[Any, float]], scale: float) -> Any:
        """(Σ w·x) · scale over ``terms`` in one new array, added in their order."""
        value = None
        for x, w in terms:
            if value is None:
                value = x * w
            elif w == 1:
                value += x
            else:
                value += x * w
        value *= scale
        return value

    def total(self, x: Any) -> float:
        """Σ x as a Python float (compensated where float32): one number crosses."""
        return float(joined(compensated_sum(namespace(x).reshape(x, (-1,)))))

    def segment_sums(self, x: Any, bounds: tuple[int, ...]) -> np.ndarray:
        """(…, K) → (…, segments) host float64: the sums over the spans between
        ``bounds``, each reduced where ``x`` lies, only the sums moved."""
        xp = namespace(x)
        parts = [compensated_sum(x[..., a:b]) for a, b in itertools.pairwise(bounds)]
        return joined(tuple(xp.stack([p[i] for p in parts], axis=-1) for i in (0, 1)))

    def sign_counts(self, x: Any, bounds: tuple[int, ...]) -> np.ndarray:
        """(…, K) → (…, segments, 2) host int64: the entries < 0 and > 0 of each span."""
        xp = namespace(x)

        def count(mask: Any) -> Any:
            return xp.stack(
                [
                    xp.sum(xp.astype(mask[..., a:b], xp.int64), axis=-1)
                    for a, b in itertools.pairwise(bounds)
                ],
                axis=-1,
            )

        return to_host(xp.stack([count(x < 0), count(x > 0)], axis=-1), np.int64)

    def all_finite(self, x: Any) -> bool:
        """No NaN or infinity in ``x``: one sum settles it unless that overflows (a NaN or
        an infinity always reaches the sum), without a K-long temporary on the usual path."""
        xp = namespace(x)
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(xp.sum(x))
        return math.isfinite(total) or bool(xp.all(xp.isfinite(x)))

    def norm(self, x: Any) -> float:
        """‖x‖₂ by elementwise ops and a sum (no BLAS: see engine/parts.py's ``_norm``)."""
        return math.sqrt(float(namespace(x).sum(x * x)))

    def rows(self, x: Any) -> list[Any]:
        """The rows of ``x`` along its first axis."""
        return [x[i] for i in range(x.shape[0])]


_GENERIC = Kernels()
#: kernels registered by a framework, by the name of its arrays' namespace
_REGISTERED: dict[str, Kernels] = {}


def register_kernels(namespace_name: str, kernels: Kernels) -> None:
    """Use ``kernels`` for the arrays whose array-API namespace is named
    ``namespace_name`` (e.g. "jax.numpy"): a backend registers them when imported."""
    _REGISTERED[namespace_name] = kernels


def kernels(x: Any) -> Kernels:
    """The kernels for ``x``'s kind of array."""
    if on_host(x) or not _REGISTERED:
        return _GENERIC
    return _REGISTERED.get(namespace(x).__name__, _GENERIC)
