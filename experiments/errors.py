"""Exceptions of the experiments package, one root, each carrying a gRPC status ``code``.

Serving's single interceptor maps ``exc.code`` to the status; messages name the fix.
"""

from __future__ import annotations


class ExperimentError(Exception):
    """Root of every error raised by ``experiments``."""

    code = "INTERNAL"


class ExperimentValidationError(ExperimentError, ValueError):
    """A definition or an argument is invalid (bad YAML, weights, buckets, unit type)."""

    code = "INVALID_ARGUMENT"


class ExperimentNotFound(ExperimentError, KeyError):
    """No experiment with that id exists in the store."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExperimentExists(ExperimentError):
    """An experiment with that id already exists."""

    code = "ALREADY_EXISTS"


class ExperimentImmutable(ExperimentError):
    """The change is not allowed in the experiment's current status (e.g. new splits while running)."""

    code = "FAILED_PRECONDITION"


class LayerConflict(ExperimentError):
    """Starting the experiment would overlap a running experiment's buckets in the same layer."""

    code = "FAILED_PRECONDITION"


class ExperimentStoreUnavailable(ExperimentError):
    """The experiment store (SQL database) cannot be reached."""

    code = "UNAVAILABLE"


class AnalysisError(ExperimentError):
    """The data cannot be analysed as asked (no exposures, unknown arm, missing columns)."""

    code = "FAILED_PRECONDITION"
