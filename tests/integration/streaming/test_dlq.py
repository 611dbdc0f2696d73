"""Malformed, oversize and wrong-schema messages land in the DLQ with their reason, source
and original bytes; every good message around them is processed."""

from __future__ import annotations

import hashlib
import time

import pytest

pytestmark = pytest.mark.integration


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(consumer)
    finally:
        consumer.close()
    return out


def test_bad_messages_go_to_dlq_with_reason_and_original_bytes(ingest_settings, produce, run_worker):
    from features import open_store
    from privacy import pseudonymize
    from proto import events_pb2 as pb
    from streaming._synthetic import SyntheticEvents

    sim = SyntheticEvents(seed=3, users=5, consent_mix=(1.0, 0.0, 0.0))
    good = [sim.context() for _ in range(30)]
    limit = ingest_settings.streaming.max_message_bytes
    big_original = pb.ContextEvent(event_id="big", user_id="u1", event_time_ms=int(time.time() * 1000),
                                   context=pb.Context(intent_text="x" * (limit + 10))).SerializeToString()
    bad = {
        "undecodable": (b"\xff\xfe not a protobuf", []),
        "oversize": (big_original, []),
        "wrong_schema": (sim.feedback().SerializeToString(), []),     # a FeedbackEvent on the context topic
        "missing_field": (pb.ContextEvent(event_id="e", user_id="u", event_time_ms=int(time.time() * 1000)).SerializeToString(), []),
    }
    header_mismatch = (good[0].SerializeToString(), [("schema", b"sightline.v1.FeedbackEvent")])
    interleaved = []
    for i, m in enumerate(good):
        interleaved.append(m)
        if i % 6 == 0 and bad:
            interleaved.append(bad.pop(next(iter(bad))) if isinstance(bad, dict) else None)
    interleaved.append(header_mismatch)
    produce("context", interleaved, partition=0)
    produce("feedback", [(b"\x08\x96\x01garbage\xff", [])], partition=1)

    totals = run_worker(max_idle_s=2.0)
    assert totals["stored"] == 30 and totals["kept.context"] == 30
    dlq = read_topic(ingest_settings.kafka.bootstrap, ingest_settings.topic("context") + ".dlq", 5)
    reasons = sorted(dict(r.headers)["error.reason"].decode() for r in dlq)
    assert reasons == ["missing_field", "oversize", "undecodable", "wrong_schema", "wrong_schema"]
    for record in dlq:
        h = dict(record.headers)
        assert h["source.topic"].decode() == ingest_settings.topic("context")
        assert h["source.partition"] == b"0" and int(h["source.offset"]) >= 0 and h["error.detail"]
    originals = {dict(r.headers)["error.reason"].decode(): r for r in dlq}
    assert originals["undecodable"].value == b"\xff\xfe not a protobuf"
    assert "value.truncated" not in dict(originals["undecodable"].headers)
    # an oversize original is kept truncated, with its full size and sha256
    big, big_headers = originals["oversize"].value, dict(originals["oversize"].headers)
    assert len(big) == 4096 and big == big_original[:4096] and big_headers["value.truncated"] == b"true"
    assert int(big_headers["source.size"]) == len(big_original) > limit
    assert big_headers["source.sha256"].decode() == hashlib.sha256(big_original).hexdigest()
    assert read_topic(ingest_settings.kafka.bootstrap, ingest_settings.topic("feedback") + ".dlq", 1)
    assert totals["dlq.context.wrong_schema"] == 2 and totals["dlq.feedback.undecodable"] == 1

    # every good message was processed: each user's 24 h count equals its events
    store = open_store(ingest_settings)
    users = sorted({m.user_id for m in good})
    got = store.get_online_features(features=["user_context:context_events_24h"],
                                    entity_rows=[{"user_id": pseudonymize(u, ingest_settings.privacy.hmac_key)}
                                                 for u in users]).to_dict()
    assert sum(got["context_events_24h"]) == 30

    from streaming import read_stats

    stats = read_stats(ingest_settings)
    assert stats.dlq["context.wrong_schema"] == 2
    assert stats.dlq_topic_messages[ingest_settings.topic("context") + ".dlq"] == 5
    assert all(lag == 0 for lag in stats.lag.values())
