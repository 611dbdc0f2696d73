"""The privacy package's exception root.

Every class names the gRPC status it maps to in ``code``; serving's one error
interceptor turns ``code`` into the status and the message into the details.
"""

from __future__ import annotations


class PrivacyError(Exception):
    """Root of the privacy package's errors; unknown subclasses map to INTERNAL."""

    code = "INTERNAL"


class InvalidUserId(PrivacyError):
    """The user id given for erasure is empty or malformed."""

    code = "INVALID_ARGUMENT"


class UnknownStage(PrivacyError):
    """A consent lookup named a stage or action the decision table does not have."""

    code = "INVALID_ARGUMENT"


class StoreUnavailable(PrivacyError):
    """A store that holds user data could not be reached, so erasure or purge is incomplete."""

    code = "UNAVAILABLE"
