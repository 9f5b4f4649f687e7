"""``Tracker``: the custom-loop integration every framework shares, and the one-call
``allocate``.

A framework's tracker only builds its backend and says how to flatten its parameters; the
verbs live here once:

* ``with tracker.step(): optimizer.step()`` (or ``begin()`` / ``end()``) where the
  parameters change in place (torch, Keras);
* ``tracker.update(params_before, params_after)`` where they don't (JAX, Keras' stateless
  loop), ``start(params)`` first when the step donates its inputs;
* ``last``, ``gradient_passes``, ``summary()``, ``close()``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .allocator import Allocator
from .arrays import to_host
from .backend_kit.splitters import Splitter
from .contract import integration, resolve_options
from .dashboards import Dashboard
from .engine.cost import announce
from .engine.parts import mismatch, part_deltas
from .engine.step import StepResult
from .engine.summary import Summary
from .errors import AccuracyWarning, UnsupportedOptimizerError
from .layout import unit_roundoff
from .options import Options, resample_design
from .protocol import Backend, Snapshot, check_backend


@integration()
class Tracker:
    """LCA of each (``every``-th block of) optimizer step(s) of a custom training loop.

    ``lca_core.Tracker(backend, store, **options)`` serves any :class:`Backend` (e.g. a
    :class:`lca_core.FunctionBackend`); the framework trackers build their backend from a
    model and take the same options.

    Args:
        backend: a ready backend (framework trackers take a model, a loss and data instead).
        store: the run directory to write (None keeps only the summary in memory).
        **options: the common options (docs/api.md): ``rule``, ``tol``, ``every``,
            ``eval_subset``, ``per_class``, ``store_params``, ``progress``, …

    Raises:
        UnknownOptionError: an option no tracker takes (the message names the valid ones).
        ValueError: options that cannot work with this backend.
    """

    framework_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, backend: Backend, store: str | os.PathLike[str] | None = None, **options: Any
    ) -> None:
        self._build((backend,), store, options)

    def _build(
        self, inputs: tuple[Any, ...], store: str | os.PathLike[str] | None, options: Any
    ) -> None:
        """Resolve the options once, build the backend from the tracker's ``inputs`` (the
        backend's options and the framework's go to :meth:`make_backend`), then set up."""
        owner = f"{type(self).__module__.split('.')[0]}.{type(self).__name__}"
        opts = resolve_options({**options, "store": store}, owner, self.framework_options)
        names = (*Options.names(part="backend"), *self.framework_options)
        keywords = {k: opts[k] for k in names if opts[k] is not None}
        self._setup(self.make_backend(*inputs, **keywords), opts)

    def make_backend(self, backend: Backend, **keywords: Any) -> Backend:
        """The backend from the tracker's inputs and the backend's options: a framework
        tracker builds it from a model; this one takes a ready one."""
        for name in keywords:
            raise ValueError(
                f"lca_core.Tracker takes a ready backend: give {name}= to the backend "
                "(e.g. FunctionBackend(..., val_data=...)), not to the tracker"
            )
        return backend

    def _setup(self, backend: Backend, opts: dict[str, Any]) -> None:
        check_backend(backend)
        design = resample_design(opts["resample"], opts["eval_subset"])
        if opts["eval_subset"] is not None:
            backend.use_subset(opts["eval_subset"], resample=design)
        if not backend.writes:  # another process of the job writes the run
            quiet = {"store": None, "resume": False, "overwrite": False, "progress": False}
            opts = {**opts, **quiet, "log_to": None, "alerts": False, "on_alert": None}
        self.backend = backend
        self.options = opts
        self.every = int(opts["every"])
        #: reads the optimizer's update rule around each step (``optimizer=``), or None
        self.splitter: Splitter | None = None
        if opts["optimizer"] is not None:
            self.splitter = self.make_splitter(opts["optimizer"])
        self.allocator = Allocator(
            backend,
            options=Options.of(opts),
            validation="val" in backend.splits,
            split_by=self.splitter.name if self.splitter is not None else None,
        )
        #: where each allocated step's numbers and alerts go (``log_to``, ``alerts``)
        self.dashboard = Dashboard(
            opts["log_to"],
            layers=backend.layout.layers,
            parts=self.allocator.parts or (),
            budget=self.allocator.options.budget,
            log_every=opts["log_every"],
            alerts=opts["alerts"],
            on_alert=opts["on_alert"],
        )
        self._parts: dict[str, np.ndarray] | None = None  # the block's parts so far
        self._split_warned = False
        #: the parameters' rounding, which the split's check allows for
        self._roundoff = unit_roundoff(p.dtype for p in backend.layout.params)
        #: optimizer steps seen so far (a resumed run continues its numbering)
        self.optimizer_steps = self.allocator.steps * self.every
        self.last: StepResult | None = None
        self._started = False
        self._last_theta: np.ndarray | None = None
        self._bar = tqdm(desc="LCA", unit="step", disable=not opts["progress"], leave=False)
        self._forecast_after_bar = False

    def make_splitter(self, optimizer: Any) -> Splitter:
        """The splitter of ``optimizer`` (``optimizer=``): a ready :class:`Splitter` as it
        is, a framework's optimizer through :meth:`find_splitter`."""
        if isinstance(optimizer, Splitter):
            return optimizer
        if optimizer is True:
            raise TypeError(
                "optimizer=True (the trainer's optimizer) is for fit callbacks; a tracker "
                "needs the optimizer itself: optimizer=my_optimizer"
            )
        return self.find_splitter(optimizer)

    def find_splitter(self, optimizer: Any) -> Splitter:
        """A framework optimizer's splitter: a framework tracker finds it in its registry;
        this one has none."""
        raise UnsupportedOptimizerError(
            "lca_core.Tracker splits by a ready lca_core.backend_kit.splitters.Splitter; "
            f"got {type(optimizer).__name__}. The framework trackers (lca_torch, "
            "lca_tensorflow, lca_jax) take their framework's optimizers"
        )

    # -- how a framework's parameters become θ (overridden by the framework trackers) ------
    def flatten(self, params: Any) -> np.ndarray:
        """θ as one host vector from the framework's own parameter container."""
        return np.asarray(params).ravel()

    # -- in-place updates: begin / end around optimizer.step() ---------------------------------
    def start(self, params: Any = None) -> None:
        """Mark θ_0 (default: the model's parameters now) and evaluate it."""
        snap = self.backend.snapshot() if params is None else Snapshot(self.flatten(params))
        self.allocator.start(snap)
        self._last_theta = snap.theta
        self._started = True

    def begin(self) -> None:
        """Call just before ``optimizer.step()``: the first call evaluates θ_0."""
        if not self._started:
            self.start()
        elif self.optimizer_steps % self.every == 0:
            self._check_untouched(self.backend.snapshot().theta)
        if self.splitter is not None:
            assert self._last_theta is not None
            self.splitter.before(to_host(self._last_theta, np.float64))

    def end(self) -> StepResult | None:
        """Call just after ``optimizer.step()``; allocates when a block of ``every`` is done."""
        if not self._started:
            raise RuntimeError("Tracker.end() before begin(): call begin() before the step")
        return self._advance(self.backend.snapshot())

    @contextmanager
    def step(self) -> Iterator[None]:
        """``with tracker.step(): optimizer.step()``."""
        self.begin()
        yield
        self.end()

    # -- functional updates: update(before, after) -------------------------------------------
    def update(
        self, params_before: Any, params_after: Any, *, opt_state: Any = None
    ) -> StepResult | None:
        """One optimizer step params_before → params_after; allocates at the end of a block.

        With ``optimizer=``, ``opt_state=(state_before, state_after)`` is the optimizer's
        state around the step, where the loop holds it as a value (optax, Keras'
        ``stateless_apply``)."""
        if not self._started:
            self.start(params_before)
        elif params_before is not None:
            self._check_untouched(self.flatten(params_before))
        states = (None, None)
        if self.splitter is not None:
            if opt_state is None or len(opt_state) != 2:
                raise TypeError(
                    "with optimizer=, give the optimizer's state around the step: "
                    "tracker.update(before, after, opt_state=(state_before, state_after))"
                )
            states = tuple(opt_state)
            assert self._last_theta is not None
            self.splitter.before(to_host(self._last_theta, np.float64), states[0])
        # a host copy at once: safe when the next jitted step donates these buffers
        return self._advance(Snapshot(self.flatten(params_after)), states[1])

    # -- shared --------------------------------------------------------------------------------
    def _advance(self, snap: Snapshot, opt_state: Any = None) -> StepResult | None:
        self.optimizer_steps += 1
        if self.splitter is not None:
            self._split(snap.theta, opt_state)
        self._last_theta = snap.theta
        if self.optimizer_steps % self.every:
            return None
        had_forecast = self.allocator.forecast is not None
        parts, self._parts = self._parts, None
        result = self.allocator.advance(snap, step_index=self.optimizer_steps - 1, parts=parts)
        if (forecast := self.allocator.forecast) is not None and not had_forecast:
            if self._bar.disable:
                announce(forecast)
            else:  # said after the bar, not through it; the bar shows the ratio meanwhile
                self._forecast_after_bar = True
                if forecast.ratio is not None:
                    self._bar.set_description(f"LCA ({forecast.ratio:.2g}× training)")
        if result is not None:
            self.last = result
            with self.allocator.cost.measure():  # the dashboards' time is LCA's
                self.dashboard.step(result, self.budget_used, self.allocator.cost.ratio)
        if not self._bar.disable:
            if result is not None:
                self._bar.set_postfix(
                    residual=f"{result.residual:.1e}", helped=f"{result.pct_helped:.1f}%"
                )
            self._bar.update()
        return result

    def _split(self, theta_after: np.ndarray, opt_state: Any) -> None:
        """The optimizer step's parts, added to its block's; the splitter's own gradient
        part, where it has one, is checked against the remainder (warned once)."""
        assert self.splitter is not None and self._last_theta is not None
        parts = self.splitter.after(opt_state)
        gradient = parts.pop("gradient", None)
        # the splitters read the optimizer's state on the host: θ comes there too
        theta = to_host(self._last_theta, np.float64)
        delta = to_host(theta_after, np.float64) - theta
        still = delta == 0  # not moved (frozen, or a step GradScaler skipped): no parts
        for v in (*parts.values(), *(() if gradient is None else (gradient,))):
            v[still] = 0.0
        if gradient is not None and not self._split_warned:
            off = mismatch(delta, part_deltas(delta, parts), gradient, self._roundoff, theta)
            if off is not None:
                self._split_warned = True
                warnings.warn(
                    f"LCA: the step differs from what {self.splitter.name}'s update rule "
                    f"gives by {off:.1e} of its size, so its parts are not the optimizer's: "
                    "is another transformation applied after the optimizer, or are the "
                    "parameters or the learning rate changed inside the tracked step?",
                    AccuracyWarning,
                    stacklevel=4,
                )
        block = self._parts if self._parts is not None else {}
        for name, v in parts.items():
            block[name] = block.get(name, 0.0) + v
        self._parts = block

    def _check_untouched(self, theta: np.ndarray) -> None:
        """Parameters changed between two tracked steps would be a loss change nobody owns."""
        last = self._last_theta  # compared directly: np.array_equal is ~10 Python calls
        if last is not None and (theta.shape != last.shape or not (theta == last).all()):
            raise RuntimeError(
                "the model's parameters changed between two tracked optimizer steps (outside "
                "`with tracker.step()` / `tracker.update`), so that change would be allocated "
                "to no one. Put every update (clipping, weight decay by hand, EMA swaps) "
                "inside the tracked step."
            )

    @property
    def expected_steps(self) -> int | None:
        """Optimizer steps the whole run will take, when the trainer knows (callbacks set
        it): the cost forecast then projects the total."""
        steps = self.allocator.expected_steps
        return steps * self.every if steps is not None else None

    @expected_steps.setter
    def expected_steps(self, steps: int | None) -> None:
        self.allocator.expected_steps = steps // self.every if steps else None

    @property
    def budget_used(self) -> float:
        """|Σ residual| / |ΔL| of the run so far: the share of the loss change its
        allocation leaves unexplained (the ``budget`` caps it)."""
        return self.allocator.running.budget_used()

    @property
    def gradient_passes(self) -> int:
        """Full evaluation-set gradient passes made so far (the cost of LCA)."""
        return self.allocator.gradient_passes

    def summary(self) -> Summary:
        return self.allocator.summary()

    def close(self) -> Summary:
        """Flush the store and return the summary (raises if strict and over budget)."""
        self._bar.close()
        if self._forecast_after_bar and (forecast := self.allocator.forecast) is not None:
            announce(forecast)
            self._forecast_after_bar = False
        try:
            return self.allocator.close()
        finally:  # the store first: then what the dashboards buffer
            self.dashboard.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Allocation(NamedTuple):
    """One step's LCA shaped like the framework's parameters, its residual, and the full
    :class:`StepResult` (flat LCA, per-layer sums, panels, …)."""

    lca: Any
    residual: float
    result: StepResult


def allocate_step(tracker: Tracker, before: Any, after: Any) -> StepResult:
    """Allocate one step with a fresh tracker and close it (the engine of every
    ``allocate``)."""
    result = tracker.update(before, after)
    tracker.close()
    assert result is not None  # every=1, not record-only: a step always allocates
    return result


def allocate(backend: Backend, theta_before: Any, theta_after: Any, **options: Any) -> Allocation:
    """LCA of one step θ_before → θ_after with ``backend`` (Captum-style: one call).

    Args:
        backend: evaluates the loss (e.g. a :class:`~lca_core.FunctionBackend`).
        theta_before, theta_after: the step's two points, flat.
        **options: the common options (``rule``, ``tol``, ``per_class``, …).

    Returns:
        An :class:`Allocation`: ``lca`` maps each parameter name to its allocation,
        shaped like the parameter; ``residual`` is ΔL − Σ LCA; ``result`` the whole
        :class:`StepResult`.
    """
    tracker = Tracker(backend, **options)
    result = allocate_step(tracker, theta_before, theta_after)
    return Allocation(backend.layout.split(result.lca), result.residual, result)
