"""Backend discovery through the ``lca.backends`` entry-point group.

Listing reads package metadata only, so it imports no framework. Auto-detection tries a
backend only when its framework is already imported (a model of that framework cannot
exist otherwise); a plugin that fails to load is a warning naming it, never a crash. An
explicit ``backend=`` always wins.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import LCAError, UnknownBackendError

GROUP = "lca.backends"

#: the modules a built-in backend's framework needs (a plugin's name is its module)
FRAMEWORK_MODULES: dict[str, tuple[str, ...]] = {
    "function": (),
    "keras-jax": ("keras", "jax"),
    "tensorflow": ("tensorflow", "keras"),
}


def framework_modules(name: str) -> tuple[str, ...]:
    """Top-level modules the backend ``name`` runs on."""
    return FRAMEWORK_MODULES.get(name, (name,))


def framework_installed(name: str) -> bool:
    """Whether the framework of backend ``name`` can be imported (found, not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in framework_modules(name))


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            warnings.warn(
                f"two lca backends are named {ep.name!r}: {found[ep.name].value} and "
                f"{ep.value}; using the first. Uninstall one of them.",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        found[ep.name] = ep
    return found


def available_backends() -> dict[str, str]:
    """Installed backends, name → ``module:object``; imports nothing."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def load_backend(name: str) -> type:
    """The backend class registered under ``name`` (e.g. ``"torch"``)."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownBackendError(
            f"no lca backend named {name!r}; installed: {sorted(eps) or 'none'}. Install one "
            f"with e.g. `pip install 'loss-change-allocation[{name}]'` if it is a framework "
            "lca supports."
        )
    try:
        return eps[name].load()
    except Exception as exc:  # a plugin can fail in any way; name it and say why
        raise LCAError(
            f"the lca backend {name!r} ({eps[name].value}) failed to load: {exc}"
        ) from exc


def detect_backend(model: Any, *args: Any) -> type:
    """The first installed backend whose framework is imported and that accepts ``model``
    (and the arguments that come with it, e.g. a JAX loss's parameters)."""
    # framework backends first: the function backend accepts any callable, models included
    for name, ep in sorted(_entry_points().items(), key=lambda item: item[0] == "function"):
        if not all(m in sys.modules for m in framework_modules(name)):
            continue
        try:
            cls = ep.load()
        except Exception as exc:
            warnings.warn(
                f"skipping lca backend {name!r} ({ep.value}): it failed to load ({exc})",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        if cls.accepts(model, *args):
            return cls
    raise UnknownBackendError(
        f"no installed lca backend accepts a {type(model).__module__}.{type(model).__name__}; "
        f"installed: {sorted(_entry_points())}. Pass backend='name' explicitly."
    )


def create_backend(model: Any, *args: Any, backend: Any = None, **options: Any) -> Any:
    """Build a backend for ``model``: ``backend`` may be a name, a class or a ready instance."""
    if backend is not None and not isinstance(backend, (str, type)):
        return backend
    cls = (
        load_backend(backend)
        if isinstance(backend, str)
        else backend or detect_backend(model, *args)
    )
    return cls(model, *args, **options)
