"""The options every integration takes, defined once: name, default, meaning, and who uses it.

A tracker, callback, ``allocate``, the :class:`~lca_core.allocator.Allocator`, the
recorder, a run read back and ``replay`` all read this one definition: the contract's
option table (``OPTIONS``, ``MEANING``), the allocator's keywords, the run's stored config
and the options a replay refuses are derived from the fields below. Adding an option is one
field here plus its use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Literal

#: who acts on an option: the allocator, the backend an integration builds, or the tracker
Part = Literal["allocator", "backend", "tracker"]


def _option(
    default: Any,
    meaning: str,
    *,
    part: Part = "allocator",
    stored: bool = False,
    replay: bool = True,
) -> Any:
    """A field of :class:`Options`: ``stored`` options are written into the run's config
    (and read back from it); ``replay=False`` ones describe how a run is recorded, so a
    replay refuses them."""
    return field(
        default=default,
        metadata={"meaning": meaning, "part": part, "stored": stored, "replay": replay},
    )


@dataclass(frozen=True)
class Options:
    """The common options of every integration, with their defaults (docs/api.md lists
    them). Framework options (``bn_policy``, ``device``, …) belong to each framework's
    backend and are not here."""

    store: str | os.PathLike[str] | None = _option(
        None, "run directory to write (None: keep only the summary in memory)", replay=False
    )
    rule: str = _option(
        "simpson",
        "quadrature rule: 'simpson' (paper), 'auto' (trapezoid, Simpson when needed), "
        "'trapezoid' or 'first_order'",
        stored=True,
    )
    tol: float = _option(
        1e-3, "per-step residual tolerance in nats; steps above it are refined", stored=True
    )
    max_panels: int = _option(32, "most quadrature sub-intervals a step is refined to", stored=True)
    budget: float = _option(0.01, "allowed |Σ residual| / |ΔL| for the whole run", stored=True)
    strict: bool = _option(False, "raise BudgetExceededError at close when over budget (data kept)")
    every: int = _option(
        1,
        "allocate every k-th optimizer step (the k steps as one block)",
        stored=True,
        replay=False,
    )
    record_only: bool = _option(
        False,
        "store θ_t only, evaluate nothing; `lca replay` allocates later",
        stored=True,
        replay=False,
    )
    resume: bool = _option(False, "continue the run already in store", replay=False)
    overwrite: bool = _option(False, "replace the run already in store", replay=False)
    val_data: Any = _option(
        None,
        "a validation set: also allocate its loss change (validation LCA)",
        part="backend",
        replay=False,
    )
    eval_subset: int | float | None = _option(
        None,
        "evaluate a seeded, class-stratified subset: n examples or a fraction; "
        "every per-layer LCA gets a standard error (layer_lca_stderr)",
        part="tracker",
    )
    resample: bool | str = _option(
        False,
        "with eval_subset: a fresh subset at every point — True or 'shared' (one pass per "
        "step, trapezoid), 'paired' (two, refined as usual); the run is checked against the "
        "full set's loss at its ends",
        part="tracker",
    )
    per_class: bool = _option(
        False, "also allocate the loss of each class (integer labels)", stored=True
    )
    store_params: bool = _option(False, "store per-parameter LCA (T × K float32)", stored=True)
    store_grads: bool = _option(
        False, "store the gradient at each θ_t (oscillation analysis)", stored=True
    )
    store_trajectory: bool = _option(
        False, "store θ_t (for replay and the first-order check)", stored=True, replay=False
    )
    batch_size: int | None = _option(
        None, "examples per evaluation chunk (None: the backend's default)", part="backend"
    )
    arithmetic: str | None = _option(
        None,
        "where lca's K-long arithmetic runs: 'device' (the gradients' own: only per-layer "
        "numbers reach the host), 'host' (numpy float64, the reference), or None/'auto' "
        "(device where the backend can)",
        part="backend",
        replay=False,
    )
    progress: bool = _option(False, "show a progress bar", part="tracker")
    optimizer: Any = _option(
        None,
        "split each step's LCA into gradient, momentum and weight_decay parts by this "
        "optimizer's update rule (True in a fit callback: the trainer's own)",
        part="tracker",
        replay=False,
    )
    log_to: Any = _option(
        None,
        "dashboards each allocated step's numbers go to: a TensorBoard, tf.summary, MLflow "
        "or W&B run or writer, a Lightning logger, a function (step, metrics), or a list",
        part="tracker",
        replay=False,
    )
    log_every: int = _option(
        1, "log every k-th allocated step to log_to", part="tracker", replay=False
    )
    alerts: Any = _option(
        True,
        "when to alert: lca_core.dashboards.Alerts(...), True (the defaults) or False",
        part="tracker",
        replay=False,
    )
    on_alert: Any = _option(
        None, "a function called with each lca_core.dashboards.Alert", part="tracker", replay=False
    )
    metadata: Mapping[str, Any] | None = _option(None, "JSON-serialisable dict stored with the run")

    def __post_init__(self) -> None:
        every = self.every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive number of optimizer steps, not {every!r}")

    # -- the table ---------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option and its default, in documentation order."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def meanings(cls) -> dict[str, str]:
        """What each option means, for the docs table and error messages."""
        return {f.name: f.metadata["meaning"] for f in fields(cls)}

    @classmethod
    def names(cls, *, part: Part | None = None, replay: bool | None = None) -> tuple[str, ...]:
        """The options acted on by ``part``, or those a replay takes (``replay=True``) or
        refuses (``replay=False``)."""
        return tuple(
            f.name
            for f in fields(cls)
            if (part is None or f.metadata["part"] == part)
            and (replay is None or f.metadata["replay"] == replay)
        )

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Options:
        """The options among ``values`` (e.g. resolved keywords that also hold framework
        options); the rest are defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def with_(self, **changes: Any) -> Options:
        """These options with some changed (checked again)."""
        return replace(self, **changes)

    # -- the run's config ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The stored options, as the run's config records them (θ_t is always stored in a
        record-only run)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["stored"]}
        out["store_trajectory"] = self.store_trajectory or self.record_only
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Options:
        """The stored options of a run's config (a store is not trusted: each value is
        checked for its type and range; ValueError names the first that is not)."""
        values = {}
        for f in fields(cls):
            if f.metadata["stored"] and f.name in config:
                values[f.name] = _checked(f, config[f.name])
        return cls(**values)


def _checked(f: Field[Any], value: Any) -> Any:
    """A stored option's value, if it is one an allocator can have written."""
    default = f.default if f.default is not MISSING else None
    ok: bool
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    elif isinstance(default, float):
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        )
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"the option {f.name!r} is {value!r}, which no run can have")
    return value


def resample_design(resample: bool | str, eval_subset: int | float | None) -> str | None:
    """The ``resample`` option as the backend's design: None, "shared" (True) or
    "paired"; refused without ``eval_subset``, which it draws afresh at every point."""
    if resample not in (False, True, "shared", "paired"):
        raise ValueError(f"resample must be False, True ('shared') or 'paired', not {resample!r}")
    if resample is False:
        return None
    if eval_subset is None:
        raise ValueError(
            "resample= draws a fresh eval_subset at every point: give eval_subset=n too "
            "(e.g. eval_subset=128, resample=True)"
        )
    return "shared" if resample is True else str(resample)
