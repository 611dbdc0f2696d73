"""What ``sightline ingest --stats`` shows: lag per topic, rates, DLQ counts, freshness."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sightline.settings import Settings
from streaming._codec import STREAMS
from streaming._state import StateStore, state_path


@dataclass
class IngestStats:
    """A snapshot of the ingest group; every field is documented in docs/streaming.md."""

    lag: dict[str, int] = field(default_factory=dict)          # topic -> end offset - committed offset (summed)
    dlq: dict[str, int] = field(default_factory=dict)          # "stream.reason" -> messages (worker counters)
    dlq_topic_messages: dict[str, int] = field(default_factory=dict)   # DLQ topic -> messages on the broker
    workers: dict[str, dict[str, float]] = field(default_factory=dict)  # worker id -> counters

    @property
    def events_per_s(self) -> float:
        return sum(w.get("events_per_s", 0.0) for w in self.workers.values() if _recent(w))

    @property
    def freshness_p99_s(self) -> float | None:
        values = [w["freshness_p99_s"] for w in self.workers.values() if "freshness_p99_s" in w]
        return max(values) if values else None

    @property
    def freshness_p50_s(self) -> float | None:
        values = [w["freshness_p50_s"] for w in self.workers.values() if "freshness_p50_s" in w]
        return max(values) if values else None


def _recent(counters: dict[str, float], within_s: float = 120) -> bool:
    return time.time() * 1000 - counters.get("updated_ms", 0) < within_s * 1000


def read_stats(settings: Settings, *, with_kafka: bool = True) -> IngestStats:
    stats = IngestStats()
    path = state_path(settings.data_dir)
    if path.exists():
        store = StateStore(path)
        try:
            stats.workers = store.counters()
        finally:
            store.close()
    for counters in stats.workers.values():
        for key, value in counters.items():
            if key.startswith("dlq."):
                stats.dlq[key[4:]] = stats.dlq.get(key[4:], 0) + int(value)
    if with_kafka:
        _kafka_figures(settings, stats)
    return stats


def _kafka_figures(settings: Settings, stats: IngestStats) -> None:
    from kafka import KafkaConsumer, TopicPartition

    bootstrap = settings.kafka.bootstrap
    if not bootstrap:
        from sightline.stack import kafka_bootstrap

        bootstrap = kafka_bootstrap(settings)
    # a consumer that never subscribes: it reads the group's committed offsets without joining it
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.streaming.group_id, enable_auto_commit=False)
    try:
        for stream in STREAMS:
            for topic in (settings.topic(stream), settings.topic(stream) + ".dlq"):
                parts = consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                if not tps:
                    continue
                ends = consumer.end_offsets(tps)
                if topic.endswith(".dlq"):
                    begins = consumer.beginning_offsets(tps)
                    stats.dlq_topic_messages[topic] = sum(ends[tp] - begins[tp] for tp in tps)
                else:
                    stats.lag[topic] = sum(max(0, ends[tp] - (consumer.committed(tp) or 0)) for tp in tps)
    finally:
        consumer.close(autocommit=False)
