"""The project's topics, created explicitly with partitions and retention."""

from __future__ import annotations

from dataclasses import dataclass

from sightline.settings import Settings

STREAMS = ("context", "consent", "feedback", "exposures")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int


def project_topics(settings: Settings) -> list[TopicSpec]:
    """Main topics plus a ``.dlq`` for each (bad messages with their reason)."""
    k = settings.kafka
    specs = []
    for stream in STREAMS:
        name = settings.topic(stream)
        specs.append(TopicSpec(name, k.partitions, k.retention_hours * 3_600_000))
        specs.append(TopicSpec(f"{name}.dlq", 1, k.dlq_retention_hours * 3_600_000))
    return specs


def ensure_topics(bootstrap: str, specs: list[TopicSpec], replication_factor: int = 1) -> list[str]:
    """Create the missing topics and align retention of existing ones; return the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs={"retention.ms": str(s.retention_ms)})
            for s in specs if s.name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        stale = [s for s in specs if s.name in existing]
        if stale:
            admin.alter_configs([
                ConfigResource(ConfigResourceType.TOPIC, s.name, configs={"retention.ms": str(s.retention_ms)})
                for s in stale
            ])
        return [t.name for t in new]
    finally:
        admin.close()
