"""The one API every integration implements: options resolved and checked one way.

Trackers and callbacks in torch, Keras/TF and JAX take the same keyword options, defined
once in :class:`~lca_core.options.Options` (``OPTIONS`` and ``MEANING`` are its table); a
framework adds options only where its concept exists (``bn_policy``, ``device``).
:func:`integration` stamps the full signature on a class, so ``inspect.signature`` and
``help()`` show every option with its default, and :func:`resolve_options` refuses an
unknown one by naming the valid ones.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .engine.quadrature import check_rule, initial_panels
from .errors import UnknownOptionError
from .options import Options
from .protocol import Backend

#: every common option and its default, in documentation order (``store`` is positional too)
OPTIONS: dict[str, Any] = Options.defaults()
#: what each option means, for the docs table and error messages
MEANING: dict[str, str] = Options.meanings()

#: options of the 0.1 release that were renamed (old → new); accepted with a warning
RENAMED = {"eval_data": "data"}
#: options of the 0.1 release that are now implied (old → why); accepted with a warning
IMPLIED = {"validation": "validation LCA is on whenever val_data is given"}

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
    Options.of(out)  # the checks every option set passes
    return out


def check_allocation(backend: Backend, options: Options, *, validation: bool) -> None:
    """Refuse allocation options that cannot work with this backend, before any pass."""
    rule, tol, max_panels = options.rule, options.tol, options.max_panels
    check_rule(rule)
    if not tol > 0 or max_panels < initial_panels(rule):
        raise ValueError(
            f"tol must be > 0 and max_panels ≥ {initial_panels(rule)} for {rule}; "
            f"got tol={tol}, max_panels={max_panels}"
        )
    if not (math.isfinite(options.budget) and options.budget >= 0):
        raise ValueError(f"budget must be a finite share ≥ 0 of |ΔL|, not {options.budget!r}")
    if options.per_class and backend.subset:
        raise ValueError(
            "per_class=True and eval_subset cannot be combined yet: the subset's error bars "
            "use the grouped evaluation that per-class LCA uses. Choose one."
        )
    if options.per_class and not backend.num_classes:
        raise ValueError(
            "per_class=True needs a backend that knows the classes of its evaluation set "
            "(give it labelled classification data)"
        )
    if validation and "val" not in backend.splits:
        raise ValueError("validation=True needs a backend built with validation data")
    if options.record_only and options.store is None and backend.writes:
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
