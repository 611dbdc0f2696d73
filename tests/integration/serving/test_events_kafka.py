"""Impression, click and exposure events reach the real Kafka broker, keyed by user id,
sent off the request path and flushed on shutdown (nothing lost)."""

from __future__ import annotations

import pytest

from proto import events_pb2, serving_pb2

pytestmark = pytest.mark.integration


def _consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    out = []
    import time

    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for record in consumer:
            out.append(record)
            if len(out) >= expected:
                break
    consumer.close()
    return out


@pytest.mark.parametrize("client,process,compression", [
    ("librdkafka", False, None), ("librdkafka", False, "gzip"), ("kafka-python", True, "gzip"),
    ("kafka-python", False, None)],
    ids=["librdkafka", "librdkafka-gzip", "kafka-python-process-gzip", "kafka-python-thread"])
def test_events_reach_kafka_and_shutdown_flushes(kafka_settings, serving_kit, client, process, compression):
    from experiments import Arm, Experiment, ExperimentStore
    from serving import KafkaEventLog

    settings = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(update={"port": 0})})
    serving_kit.seed_world(settings.campaign_db_url)
    exp = ExperimentStore.from_settings(settings)
    exp.create(Experiment(id="kafka-exp", arms=(Arm(name="a", weight=1), Arm(name="b", weight=1))))
    exp.start("kafka-exp")
    exp.close()
    events = KafkaEventLog(settings.kafka.bootstrap, process=process, client=client, compression=compression)
    r = serving_kit.start_server(settings, events=events, feature_store=False)
    served = 0
    try:
        replies = []
        for i in range(20):
            request = serving_pb2.RecommendRequest(
                app_id="app", user_id=f"user-{i % 4}",
                consent=events_pb2.Consent(context=True, personalization=True, measurement=True),
                context=events_pb2.Context(device=events_pb2.PHONE, scene="park", objects=["running_shoe"],
                                           intent_text="running shoes"),
                surfaces=serving_pb2.Surfaces(ad_slots=2, suggestions=3))
            reply = r.recommend(request)
            replies.append(reply)
            served += len(reply.ads) + len(reply.suggestions)
        click = r.feedback(serving_pb2.FeedbackRequest(type=events_pb2.CLICK,
                                                       impression_token=replies[0].ads[0].impression_token))
    finally:
        r.server.stop(5)             # drains the buffer and flushes the producer
        r.channel.close()
        r.server.api_keys.close()
    assert events.stats["failed"] == 0 and events.stats["queued"] == 0
    feedback = _consume(settings.kafka.bootstrap, settings.topic("feedback"), served + 1)
    assert len(feedback) == served + 1
    decoded = [events_pb2.FeedbackEvent.FromString(m.value) for m in feedback]
    assert all(m.key.decode() == e.user_id for m, e in zip(feedback, decoded))
    assert sum(e.type == events_pb2.IMPRESSION for e in decoded) == served
    (clicked,) = [e for e in decoded if e.type == events_pb2.CLICK]
    assert clicked.event_id == click.event_id and clicked.spend > 0
    assert all(dict(m.headers)["schema"] == b"sightline.v1.FeedbackEvent" for m in feedback)
    exposures = _consume(settings.kafka.bootstrap, settings.topic("exposures"), 4)
    units = {events_pb2.ExposureEvent.FromString(m.value).unit_id for m in exposures}
    # User units are the pseudonyms (what the logs keep), so analysis can re-derive each arm.
    from serving import pseudonymize

    key = settings.privacy.hmac_key
    assert units == {pseudonymize(f"user-{i}", key) for i in range(4)}, "one exposure per user and experiment"


def test_an_unreachable_broker_fails_at_start_with_the_address():
    from serving import KafkaEventLog

    with pytest.raises(RuntimeError, match="127.0.0.1:9"):
        KafkaEventLog("127.0.0.1:9").start()
