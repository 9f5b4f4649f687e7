"""The one API every integration implements: option names, their defaults, their checks.

Trackers and callbacks in torch, Keras/TF and JAX take the same keyword options, spelled
and defaulted here; a framework adds options only where its concept exists (``bn_policy``,
``device``). :func:`integration` stamps the full signature on a class, so
``inspect.signature`` and ``help()`` show every option with its default, and
:func:`resolve_options` refuses an unknown one by naming the valid ones.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import UnknownOptionError
from .quadrature import check_rule, initial_panels

DEFAULT_RULE = "simpson"
DEFAULT_TOL = 1e-3
DEFAULT_MAX_PANELS = 32
DEFAULT_BUDGET = 0.01

#: every common option and its default, in documentation order (``store`` is positional too)
OPTIONS: dict[str, Any] = {
    "store": None,
    "rule": DEFAULT_RULE,
    "tol": DEFAULT_TOL,
    "max_panels": DEFAULT_MAX_PANELS,
    "budget": DEFAULT_BUDGET,
    "strict": False,
    "every": 1,
    "record_only": False,
    "resume": False,
    "overwrite": False,
    "val_data": None,
    "eval_subset": None,
    "per_class": False,
    "store_params": False,
    "store_grads": False,
    "store_trajectory": False,
    "batch_size": None,
    "progress": False,
    "metadata": None,
}

#: what each option means, for the docs table and error messages
MEANING: dict[str, str] = {
    "store": "run directory to write (None: keep only the summary in memory)",
    "rule": "quadrature rule: 'simpson' (paper), 'auto' (trapezoid, Simpson when needed), "
    "'trapezoid' or 'first_order'",
    "tol": "per-step residual tolerance in nats; steps above it are refined",
    "max_panels": "most quadrature sub-intervals a step is refined to",
    "budget": "allowed |Σ residual| / |ΔL| for the whole run",
    "strict": "raise BudgetExceededError at close when over budget (data kept)",
    "every": "allocate every k-th optimizer step (the k steps as one block)",
    "record_only": "store θ_t only, evaluate nothing; `lca replay` allocates later",
    "resume": "continue the run already in store",
    "overwrite": "replace the run already in store",
    "val_data": "a validation set: also allocate its loss change (validation LCA)",
    "eval_subset": "evaluate a seeded, class-stratified subset: n examples or a fraction; "
    "every per-layer LCA gets a standard error (layer_lca_stderr)",
    "per_class": "also allocate the loss of each class (integer labels)",
    "store_params": "store per-parameter LCA (T × K float32)",
    "store_grads": "store the gradient at each θ_t (oscillation analysis)",
    "store_trajectory": "store θ_t (for replay and the first-order check)",
    "batch_size": "examples per evaluation chunk (None: the backend's default)",
    "progress": "show a progress bar",
    "metadata": "JSON-serialisable dict stored with the run",
}

#: options of the 0.1 release that were renamed (old → new); accepted with a warning
RENAMED = {"eval_data": "data"}
#: options of the 0.1 release that are now implied (old → why); accepted with a warning
IMPLIED = {"validation": "validation LCA is on whenever val_data is given"}

ALLOCATOR_OPTIONS = (
    "rule",
    "tol",
    "max_panels",
    "budget",
    "strict",
    "record_only",
    "resume",
    "overwrite",
    "per_class",
    "store_params",
    "store_grads",
    "store_trajectory",
    "metadata",
)

T = TypeVar("T")


def _deprecated(message: str) -> None:
    """A 0.1 spelling that still works for one release; the warning points at the caller's
    call of the tracker or callback (two frames above the helper that calls this)."""
    warnings.warn(message, DeprecationWarning, stacklevel=4)


def resolve_options(
    options: Mapping[str, Any], owner: str, framework: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every common option (defaults filled in) plus the framework's own ones.

    Unknown names raise :class:`UnknownOptionError` naming the valid ones; the 0.1 names
    are accepted with a ``DeprecationWarning`` for one release.
    """
    framework = dict(framework or {})
    out = {**OPTIONS, **framework}
    for name, value in options.items():
        if name in IMPLIED:
            _deprecated(f"{owner}: {name}= is deprecated and ignored; {IMPLIED[name]}")
            continue
        if name not in out:
            close = difflib.get_close_matches(name, list(out), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownOptionError(
                f"{owner} got an unknown option {name!r}.{hint} Valid options: "
                f"{', '.join(out)} (see docs/api.md)."
            )
        out[name] = value
    if not isinstance(out["every"], int) or out["every"] < 1:
        raise ValueError(
            f"every must be a positive number of optimizer steps, not {out['every']!r}"
        )
    return out


def check_allocation(
    backend: Any,
    store: Any,
    rule: str,
    tol: float,
    max_panels: int,
    per_class: bool,
    validation: bool,
    record_only: bool,
) -> None:
    """Refuse allocation options that cannot work with this backend, before any pass."""
    check_rule(rule)
    if tol <= 0 or max_panels < initial_panels(rule):
        raise ValueError(
            f"tol must be > 0 and max_panels ≥ {initial_panels(rule)} for {rule}; "
            f"got tol={tol}, max_panels={max_panels}"
        )
    if per_class and getattr(backend, "subset", None):
        raise ValueError(
            "per_class=True and eval_subset cannot be combined yet: the subset's error bars "
            "use the grouped evaluation that per-class LCA uses. Choose one."
        )
    if per_class and not backend.num_classes:
        raise ValueError(
            "per_class=True needs a backend that knows the classes of its evaluation set "
            "(give it labelled classification data)"
        )
    if validation and "val" not in backend.splits:
        raise ValueError("validation=True needs a backend built with validation data")
    if record_only and store is None and getattr(backend, "writes", True):
        raise ValueError("record_only=True needs a store directory to record θ_t into")


def renamed(kwargs: dict[str, Any], owner: str) -> dict[str, Any]:
    """Move 0.1 argument names (``eval_data``) to their new names, with a warning."""
    for old, new in RENAMED.items():
        if old in kwargs:
            _deprecated(
                f"{owner}: {old}= is deprecated, use {new}= (the same name in every framework)"
            )
            if kwargs.get(new) is not None:
                raise TypeError(f"{owner} got both {old}= and {new}=; pass {new}= only")
            kwargs[new] = kwargs.pop(old)
    return kwargs


def allocator_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The options the :class:`lca_core.Allocator` takes, from resolved options."""
    return {k: opts[k] for k in ALLOCATOR_OPTIONS}


def integration(**framework_options: Any) -> Callable[[type[T]], type[T]]:
    """Class decorator: the class's ``__init__`` takes ``**options`` and resolves them with
    :func:`resolve_options`; this stamps the full signature (common options, then the
    framework's) so introspection and ``help()`` show every option and its default."""

    def stamp(cls: type[T]) -> type[T]:
        init = cls.__init__  # type: ignore[misc]
        sig = inspect.signature(init)
        fixed = [
            p for p in sig.parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        taken = {p.name for p in fixed}
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in {**OPTIONS, **framework_options}.items()
            if name not in taken
        ]

        # a function of this class's own: classes sharing an inherited __init__ differ in
        # their framework options, so each gets its own signature
        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)

        __init__.__signature__ = sig.replace(parameters=fixed + extra)  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]
        cls.framework_options = dict(framework_options)  # type: ignore[attr-defined]
        return cls

    return stamp
