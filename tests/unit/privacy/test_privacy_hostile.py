"""Hostile input to the event decoder (streaming's public ``decode``): arbitrary bytes,
mutated events, wrong schemas and oversize messages — no crash, no hang, a clear reason."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import events_pb2 as ev
from streaming import STREAMS, InvalidMessage, decode, encode_event

REASONS = {"oversize", "undecodable", "wrong_schema", "missing_field", "invalid_value"}
MAX = 64 * 1024
NOW = 1_790_000_000_000
FAST = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _decode(kind, value, headers=None):
    start = time.perf_counter()
    try:
        msg = decode(kind, value, headers, max_bytes=MAX, now_ms=NOW)
        outcome = ("ok", msg)
    except InvalidMessage as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail and len(str(exc)) < 2000, "the reason must be short and say what to fix"
        outcome = ("invalid", exc)
    assert time.perf_counter() - start < 0.5, "one message must never take long (no hang)"
    return outcome


@FAST
@given(kind=st.sampled_from(STREAMS), value=st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(kind, value):
    _decode(kind, value)


@FAST
@given(kind=st.sampled_from(STREAMS), value=st.binary(max_size=256),
       header=st.tuples(st.sampled_from(["schema", "x", ""]), st.binary(max_size=64)))
def test_arbitrary_headers_never_crash(kind, value, header):
    _decode(kind, value, [header])


_text = st.text(max_size=300)


@FAST
@given(event_id=_text, user_id=_text, t=st.integers(-2**63, 2**63 - 1), hour=st.integers(-2**31, 2**31 - 1),
       weekday=st.integers(-2**31, 2**31 - 1), objects=st.lists(_text, max_size=20), intent=st.text(max_size=2000),
       device=st.integers(0, 2), c=st.booleans(), p=st.booleans(), m=st.booleans())
def test_mutated_context_events_are_accepted_only_when_valid(event_id, user_id, t, hour, weekday, objects, intent,
                                                             device, c, p, m):
    msg = ev.ContextEvent(event_id=event_id, event_time_ms=t, user_id=user_id,
                          consent=ev.Consent(context=c, personalization=p, measurement=m),
                          context=ev.Context(device=device, scene="x", objects=objects, intent_text=intent,
                                             local_hour=hour, local_weekday=weekday))
    _, value, headers = encode_event(msg)
    status, got = _decode("context", value, headers)
    if status == "ok":
        assert got.event_id and got.user_id and 0 <= got.context.local_hour <= 23 and 0 <= got.context.local_weekday <= 6
        assert len(got.user_id) <= 128


@FAST
@given(kind=st.sampled_from(STREAMS), other=st.sampled_from(STREAMS))
def test_another_streams_message_is_refused_or_equivalent(kind, other):
    from streaming import schema_name

    msg = {"context": ev.ContextEvent, "consent": ev.ConsentEvent, "feedback": ev.FeedbackEvent,
           "exposures": ev.ExposureEvent}[other](event_id="e", event_time_ms=NOW, user_id="u")
    _, value, headers = encode_event(msg)
    status, got = _decode(kind, value, headers)
    if kind != other:
        assert status == "invalid" and got.reason == "wrong_schema" and schema_name(kind) in got.detail


@pytest.mark.parametrize("size", [MAX + 1, 4 * 1024 * 1024])
def test_oversize_messages_are_refused_before_parsing(size):
    start = time.perf_counter()
    with pytest.raises(InvalidMessage) as info:
        decode("context", b"\x0a" * size, None, max_bytes=MAX, now_ms=NOW)
    assert info.value.reason == "oversize" and "streaming.max_message_bytes" in info.value.detail
    assert time.perf_counter() - start < 0.5, "refused before parsing"


def test_deeply_nested_or_repeated_garbage_is_bounded():
    # a length-delimited field claiming 2 GB, and a long run of repeated-field tags
    for value in (b"\x2a\xff\xff\xff\xff\x07", b"\x1a\x00" * 30_000, b"\x80" * 20):
        status, got = _decode("context", value)
        assert status == "invalid"
