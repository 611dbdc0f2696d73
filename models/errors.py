"""The one exception root of ``models``; each class names the gRPC status serving maps it to."""

from __future__ import annotations


class ModelsError(Exception):
    """Base of every error raised by ``models``."""

    code = "INTERNAL"


class ModelNotFound(ModelsError):
    """No registered model has that version or alias; ``sightline models list`` shows them."""

    code = "NOT_FOUND"


class InvalidModelInput(ModelsError):
    """Rows handed to a scorer (or a training frame) lack a column or have a bad value."""

    code = "INVALID_ARGUMENT"


class TrainingDataError(ModelsError):
    """The logged impressions cannot make a training set (empty, one class, no time span)."""

    code = "FAILED_PRECONDITION"


class TrainingError(ModelsError):
    """Training itself failed (a worker process died, the process group did not form)."""

    code = "INTERNAL"
