"""The optimizer-aware split of a step's allocation (DESIGN §13): A = Σ_part ḡ ⊙ Δ_part.

An optimizer's update is a sum of terms (this step's gradient, the momentum carried from
earlier steps, weight decay), and A = ḡ ⊙ Δ is linear in Δ, so the allocation splits
exactly, at no extra gradient pass. A splitter (:mod:`lca_core.backend_kit.splitters`)
gives every part but the gradient's; the gradient part is the remainder of the step as
the model holds it, Δ − Σ others, so rounding never breaks Σ parts = A, and a part an
optimizer does not have is identically 0.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat
import numpy as np

from ..arrays import namespace

#: the parts of a step, in the order every array of a run holds them; the first is the
#: remainder
PARTS: tuple[str, ...] = ("gradient", "momentum", "weight_decay")


def part_deltas(delta: Any, parts: Mapping[str, np.ndarray]) -> Any:
    """Δ split by :data:`PARTS`, (parts, K) in Δ's dtype where Δ lies: the given parts as
    they are, the gradient's the remainder. ``parts`` holds every part but ``gradient``
    (host vectors from a splitter; moved to Δ's device)."""
    unknown = set(parts) - set(PARTS[1:])
    if unknown:
        raise ValueError(f"a splitter gave parts {sorted(unknown)}; lca's parts are {PARTS[1:]}")
    xp, where = namespace(delta), array_api_compat.device(delta)
    given = []
    for name in PARTS[1:]:
        if name in parts and np.shape(parts[name]) != tuple(delta.shape):
            raise ValueError(
                f"the {name} part has shape {np.shape(parts[name])}, the step "
                f"{tuple(delta.shape)}: a splitter gives one flat value per parameter, in the "
                "layout's order"
            )
        part = parts.get(name)
        given.append(
            xp.zeros_like(delta)
            if part is None
            else xp.asarray(part, dtype=delta.dtype, device=where)
        )
    return xp.stack([delta - functools.reduce(operator.add, given), *given])


def part_layer_sums(
    reduce: Callable[[np.ndarray], np.ndarray],
    gbar: np.ndarray,
    deltas: np.ndarray,
    layer_lca: np.ndarray,
) -> np.ndarray:
    """Each part's LCA by layer, (parts, layers): ḡ ⊙ Δ_part summed by ``reduce``, the
    gradient's row the remainder of ``layer_lca`` so the rows sum to it exactly."""
    out = np.zeros((len(deltas), layer_lca.size))
    for i in range(1, len(deltas)):
        out[i] = reduce(gbar * deltas[i])
    out[0] = layer_lca - out[1:].sum(axis=0)
    return out


def part_lca(lca: Any, gbar: Any, deltas: Any) -> Any:
    """Per-parameter parts, (parts, K), the gradient's the remainder of ``lca`` (where
    they lie: built without writing into an array, which JAX's cannot take)."""
    xp = namespace(lca)
    others = gbar[None, :] * deltas[1:]
    return xp.concat([(lca - xp.sum(others, axis=0))[None, :], others])


def mismatch(
    delta: np.ndarray, deltas: np.ndarray, gradient: np.ndarray, roundoff: float, theta: np.ndarray
) -> float | None:
    """How far the remainder is from the gradient part the splitter computed on its own,
    relative to |Δ|, beyond the parameters' rounding; None when within it. A large one
    means the update is not the one the splitter knows (a transformation after the
    optimizer, a learning rate changed inside the step)."""
    off, size = _norm(deltas[0] - gradient), _norm(delta)
    if off <= 1e-3 * size + 16 * roundoff * _norm(theta):
        return None
    return off / max(size, np.finfo(float).tiny)


def _norm(x: np.ndarray) -> float:
    """‖x‖ by ufuncs: ``np.linalg.norm`` goes through BLAS, whose threads, woken beside
    a framework's own, cost milliseconds per call here."""
    return float(np.sqrt(np.sum(x * x)))
