"""The streaming package's exception root; ``code`` names the gRPC status it maps to."""

from __future__ import annotations


class StreamingError(Exception):
    """Root of every error the streaming stage raises on purpose."""

    code = "INTERNAL"


class InvalidMessage(StreamingError):
    """A Kafka message failed decoding or validation; it goes to the DLQ with ``reason``.

    ``reason`` is a short machine-readable tag (``oversize``, ``undecodable``,
    ``wrong_schema``, ``missing_field``, ``invalid_value``); ``detail`` says what to fix
    in the producer.
    """

    code = "INVALID_ARGUMENT"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class IngestUnavailable(StreamingError):
    """Kafka or the feature store could not be reached; the message says which and how to start it."""

    code = "UNAVAILABLE"


class StateStoreError(StreamingError):
    """The worker's local state store is unusable (wrong version, disk full...)."""

    code = "FAILED_PRECONDITION"
