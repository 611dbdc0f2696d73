"""Fixtures for the streaming integration tests: settings on the session broker with
this test's own topics *and* an applied Feast repo, a producer, and an oracle."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

# the oracle and store readers in _streaming_oracle.py (pytest runs with --import-mode=importlib)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def ingest_settings(kafka_settings):
    """kafka_settings + an applied Feast repo in the same data dir, small batches, short timeouts."""
    from features import apply_repo

    settings = kafka_settings.model_copy(update={
        "streaming": kafka_settings.streaming.model_copy(update={
            "group_id": f"ingest-{kafka_settings.kafka.topic_prefix}", "flush_interval_s": 0.5,
            "poll_timeout_ms": 50, "session_timeout_ms": 6000, "max_poll_records": 200}),
    })
    apply_repo(settings)
    return settings


@pytest.fixture
def produce(ingest_settings):
    """produce(stream, [messages] | [(raw bytes, headers)]) → sends keyed by user, flushes."""
    from kafka import KafkaProducer

    from streaming import encode_event

    producer = KafkaProducer(bootstrap_servers=ingest_settings.kafka.bootstrap, acks="all", linger_ms=5,
                             max_request_size=1_048_576)

    def send(stream: str, messages, partition: int | None = None) -> None:
        topic = ingest_settings.topic(stream)
        for m in messages:
            if isinstance(m, tuple):
                value, headers = m
                producer.send(topic, key=b"bad", value=value, headers=headers, partition=partition)
            else:
                key, value, headers = encode_event(m)
                producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        producer.flush(30)

    yield send
    producer.close()


@pytest.fixture
def run_worker(ingest_settings):
    """run_worker(max_idle_s=2) → consume in this process until idle; returns the worker's totals."""
    from streaming import IngestWorker

    def run(max_idle_s: float = 2.0, worker_id: str = "0", timeout_s: float = 60.0, **kwargs):
        worker = IngestWorker(ingest_settings, worker_id, **kwargs)
        stop = threading.Event()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            started = time.monotonic()
            totals = worker.run(stop, max_idle_s=max_idle_s)
            assert time.monotonic() - started < timeout_s, "worker did not go idle in time"
            return totals
        finally:
            timer.cancel()

    return run
