"""Decoding and validation of the protobuf events on the ingest topics.

Pure functions: bytes in, a typed protobuf message out, or ``InvalidMessage`` with a
reason tag the DLQ records. Producers may set a ``schema`` header with the message's
full name (``sightline.v1.ContextEvent``); if present it must match the topic.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from proto import events_pb2 as pb
from streaming.errors import InvalidMessage

STREAMS: tuple[str, ...] = ("context", "consent", "feedback", "exposures")
MESSAGE_TYPES = {
    "context": pb.ContextEvent,
    "consent": pb.ConsentEvent,
    "feedback": pb.FeedbackEvent,
    "exposures": pb.ExposureEvent,
}
SCHEMA_HEADER = "schema"
_MIN_TIME_MS = 946_684_800_000          # 2000-01-01: anything older is a unit mistake
_MAX_FUTURE_MS = 24 * 3_600_000         # clocks may be off, but not by more than a day


def schema_name(kind: str) -> str:
    return MESSAGE_TYPES[kind].DESCRIPTOR.full_name


def encode_event(message) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` for producing an event: keyed by user id, with the schema header."""
    return (
        message.user_id.encode(),
        message.SerializeToString(),
        [(SCHEMA_HEADER, message.DESCRIPTOR.full_name.encode())],
    )


# singular sub-message fields per type: the only places (besides the top level) unknown fields are looked for
_SUBMESSAGES = {cls: tuple(f.name for f in cls.DESCRIPTOR.fields if f.message_type is not None and not f.is_repeated)
                for cls in MESSAGE_TYPES.values()}


def _has_unknown(message) -> bool:
    if len(UnknownFieldSet(message)):
        return True
    for name in _SUBMESSAGES[type(message)]:   # by name: ListFields() cost more than the checks (bench.ingest)
        if message.HasField(name) and len(UnknownFieldSet(getattr(message, name))):
            return True
    return False


def decode(kind: str, value: bytes | None, headers=None, *, max_bytes: int, now_ms: int):
    """Decode and validate one message of stream ``kind``; raise ``InvalidMessage`` if it is bad."""
    if value is None:
        raise InvalidMessage("undecodable", "message has no value (a tombstone?); produce a serialized event")
    if len(value) > max_bytes:
        raise InvalidMessage("oversize", f"{len(value)} bytes > limit {max_bytes} (streaming.max_message_bytes)")
    expected = schema_name(kind)
    for key, header_value in headers or ():
        if key == SCHEMA_HEADER:
            got = header_value.decode("utf-8", "replace") if isinstance(header_value, bytes) else str(header_value)
            if got != expected:
                raise InvalidMessage("wrong_schema", f"schema header {got!r} on the {kind} topic; expected {expected}")
    message = MESSAGE_TYPES[kind]()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidMessage("undecodable", f"not a {expected}: {exc}") from None
    if _has_unknown(message):
        raise InvalidMessage("wrong_schema", f"fields unknown to {expected} (another message type on the {kind} topic?)")
    _validate(kind, message, now_ms)
    return message


def _require(message, name: str, kind: str) -> None:
    if not getattr(message, name):
        raise InvalidMessage("missing_field", f"{kind} event without {name}")


def _validate(kind: str, m, now_ms: int) -> None:
    _require(m, "event_id", kind)
    # Serving strips the user id from feedback and exposures of requests without
    # personalization consent (nothing user-keyed is kept); those still count for item,
    # campaign and delivery figures, so only personalized events must name their user.
    anonymous_ok = kind in ("feedback", "exposures") and not m.consent.personalization
    if not anonymous_ok:
        _require(m, "user_id", kind)
    if len(m.event_id) > 128 or len(m.user_id) > 128:
        raise InvalidMessage("invalid_value", "event_id and user_id must be at most 128 characters")
    if not (_MIN_TIME_MS <= m.event_time_ms <= now_ms + _MAX_FUTURE_MS):
        raise InvalidMessage("invalid_value", f"event_time_ms {m.event_time_ms} is not a UTC epoch-millisecond time near now")
    if kind == "context":
        if not m.HasField("context"):
            raise InvalidMessage("missing_field", "context event without context")
        if not (0 <= m.context.local_hour <= 23 and 0 <= m.context.local_weekday <= 6):
            raise InvalidMessage("invalid_value", "context.local_hour must be 0..23 and local_weekday 0..6")
    elif kind == "feedback":
        if m.type == pb.FEEDBACK_TYPE_UNSPECIFIED:
            raise InvalidMessage("missing_field", "feedback event without type (IMPRESSION, CLICK or CONVERSION)")
        _require(m, "item_id", kind)
    elif kind == "exposures":
        for name in ("experiment_id", "arm"):
            _require(m, name, kind)
