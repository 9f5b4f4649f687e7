"""Errors raised by lca; each message says what was wrong and how to fix it."""

from __future__ import annotations


class LCAError(Exception):
    """Base class of every error lca raises on purpose."""


class LayoutMismatchError(LCAError, ValueError):
    """Parameters or gradients do not match the layout the run was started with."""


class NonFiniteError(LCAError, FloatingPointError):
    """A loss, gradient or parameter step is NaN or infinite."""


class NondeterministicLossError(LCAError):
    """The loss is not a pure function of the parameters."""


class EmptyEvaluationSetError(LCAError, ValueError):
    """The evaluation set holds no samples."""


class UnknownBackendError(LCAError, LookupError):
    """No installed backend has the requested name."""


class NotARunError(LCAError, FileNotFoundError):
    """A path does not hold an lca run store."""


class FormatVersionError(LCAError):
    """A run store was written by a newer lca than the one reading it."""


class BudgetExceededError(LCAError):
    """The cumulative residual is over the error budget and ``strict=True`` was asked for."""


class UnknownOptionError(LCAError, TypeError):
    """An option that no tracker or callback of this framework takes (the message lists them)."""


class LossShapeError(LCAError, ValueError):
    """A loss function returned neither a batch mean nor one loss per example."""


class InsufficientDataError(LCAError, ValueError):
    """A run has the arrays an analysis needs but not enough in them (e.g. one layer)."""


class RunLockedError(LCAError):
    """Another process is writing this run: a run has one writer."""


class RunExistsError(LCAError, FileExistsError):
    """The target directory already holds a run or other files; lca deletes only its own."""


class CorruptRunError(LCAError):
    """A run store is damaged or not what it claims (the message names the file and why)."""


class OutputError(LCAError):
    """An output path cannot be written as asked (exists, is a directory, is inside a run)."""


class MetadataError(LCAError, TypeError):
    """Run metadata that cannot be stored as JSON."""


class EvaluationDataError(LCAError, ValueError):
    """The evaluation data does not fit the model or the loss (shape, labels, NaN inputs)."""


class DistributedError(LCAError, RuntimeError):
    """A process of a data-parallel job failed or timed out during LCA's evaluation."""

    @classmethod
    def peer_lost(cls, process: str, exc: BaseException) -> DistributedError:
        """The error every framework raises when a collective of the evaluation fails."""
        return cls(
            f"{process}: the collective sum of LCA's evaluation failed ({exc}). Another "
            "process of the job has stopped or timed out; the run keeps every committed step "
            "(the writing process commits them) and resumes with resume=True."
        )


class UnsupportedOptimizerError(LCAError, TypeError):
    """``optimizer=`` names an optimizer no splitter knows (the message lists those that
    are, and how to register one)."""


class AccuracyWarning(UserWarning):
    """A run whose allocation is not within what its summary promises: over its error
    budget, or with steps that did not meet the acceptance rule (warned at close)."""
