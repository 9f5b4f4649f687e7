"""lca — Loss Change Allocation: which parameters made a neural network learn.

The backend-neutral core: numpy only, no deep-learning framework is imported here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .allocator import Allocator, StepResult
from .errors import (
    BudgetExceededError,
    EmptyEvaluationSetError,
    FormatVersionError,
    LayoutMismatchError,
    LCAError,
    NondeterministicLossError,
    NonFiniteError,
    NotARunError,
    UnknownBackendError,
)
from .function_backend import FunctionBackend
from .layout import Layout, ParamSpec
from .protocol import Backend, Evaluation, Snapshot
from .registry import available_backends, create_backend, load_backend
from .replay import replay
from .run import Run, open_run

__all__ = [
    "Allocator",
    "Backend",
    "BudgetExceededError",
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
    "ParamSpec",
    "Run",
    "Snapshot",
    "StepResult",
    "UnknownBackendError",
    "__version__",
    "available_backends",
    "create_backend",
    "load_backend",
    "open_run",
    "replay",
]
