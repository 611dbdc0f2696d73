"""Kafka topic retention is aligned with the offline retention (both 30 days by default)."""

import time

import pytest

pytestmark = pytest.mark.integration


def _retention_ms(bootstrap, topics):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        by_name = next(iter(got.values())) if len(got) == 1 else got.get("TOPIC", got)
        out = {}
        for name, configs in by_name.items():
            value = configs.get("retention.ms")
            value = value["value"] if isinstance(value, dict) else value
            out[name] = None if value is None else int(value)
        return out
    finally:
        admin.close()


def _wait_listed(bootstrap, names, timeout=10.0):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        deadline = time.monotonic() + timeout
        while not set(names) <= set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        admin.close()


def test_main_topics_keep_messages_exactly_as_long_as_the_offline_store(kafka_settings):
    s = kafka_settings
    assert s.kafka.retention_hours * 3_600_000 == s.privacy.retention_days * 86_400_000, \
        "defaults drifted: kafka.retention_hours must equal 24 × privacy.retention_days"
    topics = [s.topic(k) for k in ("context", "consent", "feedback", "exposures")]
    got = _retention_ms(s.kafka.bootstrap, topics)
    assert got == {t: s.privacy.retention_days * 86_400_000 for t in topics}


def test_changing_retention_re_aligns_existing_topics(kafka_settings):
    from sightline.stack import ensure_topics, project_topics

    s = kafka_settings.model_copy(update={"kafka": kafka_settings.kafka.model_copy(update={"retention_hours": 24 * 7})})
    _wait_listed(s.kafka.bootstrap, [t.name for t in project_topics(s)])
    # (ensure_topics treats a topic missing from list_topics as new; right after creation the
    # broker may not list it yet, create_topics then fails with TopicAlreadyExists and the
    # retention is silently not aligned — reported as a gap in sightline/stack/_topics.py)
    ensure_topics(s.kafka.bootstrap, project_topics(s))
    deadline = time.monotonic() + 10
    while True:  # the broker applies altered topic configs asynchronously
        got = _retention_ms(s.kafka.bootstrap, [s.topic("context")])
        if got == {s.topic("context"): 7 * 86_400_000} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == {s.topic("context"): 7 * 86_400_000}
