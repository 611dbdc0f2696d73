"""Traffic to the real broker and back: every event arrives once, keyed by user, parseable."""

import time

import pytest

from proto import events_pb2 as pb
from simulation import plan_traffic, produce_traffic

pytestmark = pytest.mark.integration


def _consume(bootstrap, topics, expected, timeout_s=30.0):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_traffic_round_trips_through_the_broker(small_world, kafka_settings):
    plan = plan_traffic(small_world, 1_500, seed=4, withdrawal_share=0.05)
    stats = produce_traffic(small_world, plan, kafka_settings)
    assert stats.context_events == plan.n_context and stats.consent_events == plan.n_consent
    assert stats.withdrawals == len(plan.withdrawn_users) > 0
    ctx_topic, consent_topic = kafka_settings.topic("context"), kafka_settings.topic("consent")
    records = _consume(kafka_settings.kafka.bootstrap, [ctx_topic, consent_topic], plan.n_context + plan.n_consent)
    contexts = [pb.ContextEvent.FromString(r.value) for r in records if r.topic == ctx_topic]
    consents = [pb.ConsentEvent.FromString(r.value) for r in records if r.topic == consent_topic]
    assert len(contexts) == plan.n_context and len(consents) == plan.n_consent
    assert len({e.event_id for e in contexts}) == plan.n_context
    for r in records[:500]:
        msg = (pb.ContextEvent if r.topic == ctx_topic else pb.ConsentEvent).FromString(r.value)
        assert r.key == msg.user_id.encode()
    # per-user order is kept within a partition (key = user id)
    by_user = {}
    for e in contexts:
        by_user.setdefault(e.user_id, []).append(e.event_time_ms)
    assert all(ts == sorted(ts) for ts in by_user.values())
    withdrawals = [c for c in consents if not c.consent.personalization and not c.consent.measurement]
    assert withdrawals


def test_paced_traffic_holds_the_rate(small_world, kafka_settings):
    plan = plan_traffic(small_world, 150, seed=5, withdrawal_share=0.0)
    total = plan.n_context + plan.n_consent
    stats = produce_traffic(small_world, plan, kafka_settings, rate=400.0, stamp_now=True)
    assert stats.seconds >= (total - 1) / 400.0 * 0.95
    records = _consume(kafka_settings.kafka.bootstrap, [kafka_settings.topic("context")], plan.n_context)
    now_ms = time.time() * 1000
    assert all(now_ms - 60_000 < pb.ContextEvent.FromString(r.value).event_time_ms <= now_ms for r in records)
