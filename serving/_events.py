"""Event logging off the request path: a buffered background Kafka producer.

Recommend and ReportFeedback only ``send()`` — a queue append of an already built
protobuf message. One thread serialises the messages and hands them to kafka-python's
producer (idempotent, acks=all, unlimited retries). ``close()`` drains the queue and
flushes the producer, so a clean shutdown loses nothing; a full buffer makes ``send``
wait (back-pressure) rather than drop.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

SCHEMA_HEADER = "schema"
_STOP = object()


class MemoryEventLog:
    """An in-memory event sink with the same interface (unit tests, benchmarks)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def send(self, topic: str, message) -> None:
        with self._lock:
            self.events.append((topic, message))

    def of(self, topic: str) -> list:
        with self._lock:
            return [m for t, m in self.events if t == topic]

    def start(self) -> "MemoryEventLog":
        return self

    def close(self, timeout: float = 10.0) -> None:
        pass

    stats = property(lambda self: {"sent": len(self.events), "failed": 0, "queued": 0})


class KafkaEventLog:
    """Buffered producer of protobuf events keyed by their ``user_id``."""

    def __init__(self, bootstrap: str, *, max_buffer: int = 100_000, linger_ms: int = 20,
                 compression: str | None = "gzip", producer_factory: Callable[..., object] | None = None) -> None:
        self._bootstrap = bootstrap
        self._queue: queue.Queue = queue.Queue(maxsize=max_buffer)
        self._linger_ms = linger_ms
        self._compression = compression
        self._factory = producer_factory
        self._producer = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.last_error: Exception | None = None

    def start(self) -> "KafkaEventLog":
        if self._thread is not None:
            return self
        if self._factory is not None:
            self._producer = self._factory()
        else:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self._bootstrap, acks="all", linger_ms=self._linger_ms,
                enable_idempotence=True, compression_type=self._compression, batch_size=256 * 1024,
                client_id="sightline-serving",
            )
        self._thread = threading.Thread(target=self._run, name="serving-event-log", daemon=True)
        self._thread.start()
        return self

    def send(self, topic: str, message) -> None:
        """Queue one protobuf message for ``topic`` (waits only when the buffer is full)."""
        if self._thread is None:
            raise RuntimeError("KafkaEventLog.send before start(); call start() when the server starts")
        self._queue.put((topic, message))

    @property
    def stats(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "queued": self._queue.qsize()}

    def _on_error(self, exc) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = exc
        log.error("event delivery to Kafka failed after retries: %s", exc)

    def _run(self) -> None:
        producer = self._producer
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            topic, message = item
            try:
                future = producer.send(
                    topic, key=message.user_id.encode(), value=message.SerializeToString(),
                    headers=[(SCHEMA_HEADER, message.DESCRIPTOR.full_name.encode())])
                future.add_errback(self._on_error)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - keep the thread alive; count it
                self._on_error(exc)

    def close(self, timeout: float = 30.0) -> None:
        """Send everything queued, flush the producer, stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        try:
            self._producer.flush(timeout=timeout)
            self._producer.close(timeout=timeout)
        finally:
            self._thread = None
        log.info("event log closed: %d sent, %d failed", self.sent, self.failed)
