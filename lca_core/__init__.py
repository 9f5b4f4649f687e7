"""lca — Loss Change Allocation: which parameters made a neural network learn.

The backend-neutral core: numpy only, no deep-learning framework is imported here.
"""

from __future__ import annotations

from ._version import __version__
from .allocator import Allocator
from .backend_kit.function_backend import FunctionBackend
from .backend_kit.plugins import available_backends, create_backend, load_backend
from .backend_kit.splitters import Splitter
from .engine.parts import PARTS
from .engine.step import StepResult
from .engine.summary import Summary
from .errors import (
    BudgetExceededError,
    DistributedError,
    EmptyEvaluationSetError,
    FormatVersionError,
    LayoutMismatchError,
    LCAError,
    NondeterministicLossError,
    NonFiniteError,
    NotARunError,
    UnknownBackendError,
    UnknownOptionError,
    UnsupportedOptimizerError,
)
from .layout import Layout, ParamSpec
from .options import Options
from .protocol import Backend, Evaluation, Snapshot
from .replay import replay
from .storage.run import Run, open_run
from .tracker import Allocation, Tracker, allocate

__all__ = [
    "PARTS",
    "Allocation",
    "Allocator",
    "Backend",
    "BudgetExceededError",
    "DistributedError",
    "EmptyEvaluationSetError",
    "Evaluation",
    "FormatVersionError",
    "FunctionBackend",
    "LCAError",
    "Layout",
    "LayoutMismatchError",
    "NonFiniteError",
    "NondeterministicLossError",
    "NotARunError",
    "Options",
    "ParamSpec",
    "Run",
    "Snapshot",
    "Splitter",
    "StepResult",
    "Summary",
    "Tracker",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnsupportedOptimizerError",
    "__version__",
    "allocate",
    "available_backends",
    "create_backend",
    "load_backend",
    "open_run",
    "replay",
]
