"""Serving's exception root. Every class names the gRPC status it maps to in ``code``;
the one error interceptor (``serving._interceptors``) turns ``code`` into the status and
the message into the details. Messages name the fix; ``field`` names the bad request field.
"""

from __future__ import annotations


class ServingError(Exception):
    """Root of serving's errors; unknown subclasses map to INTERNAL."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequest(ServingError):
    """A request field is malformed; ``field`` names it (e.g. ``surfaces.ad_slots``)."""

    code = "INVALID_ARGUMENT"


class Unauthenticated(ServingError):
    """No API key, or an unknown or revoked one."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ServingError):
    """The API key lacks the scope the method requires."""

    code = "PERMISSION_DENIED"


class ConsentDenied(ServingError):
    """The request's consent does not allow what was asked (e.g. no ``context`` purpose)."""

    code = "PERMISSION_DENIED"


class RateLimited(ServingError):
    """The API key exceeded its request rate."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServingError):
    """A dependency the request cannot do without is down."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    """The caller's deadline ran out before the reply was ready."""

    code = "DEADLINE_EXCEEDED"


class NotFound(ServingError):
    code = "NOT_FOUND"


class ServerConfigError(ServingError):
    """The server cannot be built as configured (raised at start-up, not per request)."""

    code = "FAILED_PRECONDITION"
