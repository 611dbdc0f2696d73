"""A Kafka consumer-group worker around ``Pipeline``: poll → process → flush → commit.

Offsets are committed manually, only after ``Pipeline.flush`` (offline parts, event
logs) and after the DLQ producer has delivered; so a crash replays at most one flush
interval of records, which the state store recognises by ``event_id``. Partitions
are flushed and committed when the group revokes them, so a hand-over replays
nothing in the normal case.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections import Counter, deque

from sightline.settings import Settings
from streaming._codec import STREAMS
from streaming._pipeline import Pipeline
from streaming._state import StateStore, state_path
from streaming._windows import D7, MINUTE_MS, WindowParams
from streaming.errors import IngestUnavailable, InvalidMessage

log = logging.getLogger(__name__)

_GC_GEN0_THRESHOLD = 50_000   # allocations between young-generation collections while consuming
_DLQ_KEEP_BYTES = 4096     # the DLQ copy keeps this much of the original (+ its size and sha256)
_DLQ_BUFFER_MAX = 2000     # bad records held before they are handed to the producer in one run


class KafkaDeadLetters:
    """Sends a rejected record to ``<topic>.dlq``: its key, the first ``keep_bytes`` of its value,
    and reason, source, full size and sha256 of the original in headers.

    Copies are collected and handed to the producer in runs (at ``flush``, or every
    ``buffer_max`` records), not one by one between good records: a burst of bad messages
    must cost the worker no more than good ones (bench.hostile). Truncation bounds what a
    burst of oversize garbage costs the broker and the DLQ; the sha256 still identifies the
    original, which stays on the source topic until retention (its offset is in the headers).
    ``flush`` runs before offsets are committed, so no bad record is lost on a crash."""

    PRODUCER_CONFIG = {"linger_ms": 20, "batch_size": 256 * 1024, "max_request_size": 1_048_576}
    """KafkaProducer settings for the DLQ producer: big batches, so a burst of copies wakes the
    producer's I/O thread per 256 KB, not per record (bench.hostile: ratio 0.26 → 0.42)."""

    def __init__(self, producer, worker_id: str, *, keep_bytes: int = _DLQ_KEEP_BYTES,
                 buffer_max: int = _DLQ_BUFFER_MAX) -> None:
        self._producer = producer
        self._worker = worker_id.encode()
        self._keep = keep_bytes
        self._buffer_max = buffer_max
        self._pending: list[tuple] = []

    def send(self, record, kind: str, error: InvalidMessage) -> None:
        value = record.value or b""
        headers = [
            ("error.reason", error.reason.encode()), ("error.detail", error.detail.encode()[:1000]),
            ("source.topic", record.topic.encode()), ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()), ("source.timestamp_ms", str(record.timestamp).encode()),
            ("source.size", str(len(value)).encode()), ("source.sha256", hashlib.sha256(value).hexdigest().encode()),
            ("worker", self._worker),
        ]
        if len(value) > self._keep:
            headers.append(("value.truncated", b"true"))
            value = value[:self._keep]
        self._pending.append((f"{record.topic}.dlq", record.key, value, headers))
        if len(self._pending) >= self._buffer_max:
            self._send_pending()

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        send = self._producer.send
        for topic, key, value, headers in pending:
            send(topic, key=key, value=value, headers=headers)

    def flush(self) -> None:
        self._send_pending()
        self._producer.flush(timeout=30)


class _Metrics:
    """Optional Prometheus exporter (one registry per worker, no globals)."""

    def __init__(self, port: int | None, worker_id: str) -> None:
        self.enabled = port is not None
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.events = PCounter("sightline_ingest_events", "Ingest events by stream and outcome", ["stream", "outcome"],
                               registry=self.registry)
        self.dlq = PCounter("sightline_ingest_dlq", "Messages sent to a DLQ", ["stream", "reason"], registry=self.registry)
        self.freshness = Histogram("sightline_ingest_freshness_seconds", "Event time to online-store write",
                                   buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)
        self.lag = Gauge("sightline_ingest_lag", "Consumer lag (messages) by topic", ["topic"], registry=self.registry)
        start_http_server(port, addr="127.0.0.1", registry=self.registry)
        log.info("worker %s: Prometheus metrics on 127.0.0.1:%d", worker_id, port)

    def observe(self, counts: Counter, freshness: list[float]) -> None:
        if not self.enabled:
            return
        for key, n in counts.items():
            parts = key.split(".")
            if parts[0] == "dlq":
                self.dlq.labels(parts[1], parts[2]).inc(n)
            elif len(parts) >= 2 and parts[0] in ("in", "kept", "dropped", "duplicate"):
                self.events.labels(parts[1], ".".join([parts[0]] + parts[2:])).inc(n)
        for f in freshness:
            self.freshness.observe(f)


class IngestWorker:
    """One consumer in the ingest group; ``run`` until ``stop`` is set (or idle too long)."""

    def __init__(self, settings: Settings, worker_id: str = "0", *, streams=STREAMS, sink=None, matcher=None,
                 online_mode: str = "direct") -> None:
        self.settings = settings
        self.worker_id = str(worker_id)
        self.streams = tuple(streams)
        self._sink = sink
        self._matcher = matcher
        self._online_mode = online_mode
        self.totals: Counter = Counter()
        self._fresh: deque[float] = deque(maxlen=100_000)
        self._rate: deque[tuple[float, int]] = deque(maxlen=600)
        self._positions: dict = {}
        self._last_flush = time.monotonic()
        self._assigned_at: float | None = None
        self._unwritten: deque[tuple[int, object]] = deque()   # (online write sequence number, BatchResult)
        self._on_batch = None

    # ------------------------------------------------------------------ wiring
    def _build(self):
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        from privacy import Tombstones

        s = self.settings
        bootstrap = s.kafka.bootstrap
        if not bootstrap:
            from sightline.stack import kafka_bootstrap

            bootstrap = kafka_bootstrap(s)
        if self._sink is None:
            from features import open_store
            from streaming._feast import FeastSink

            # inline for the "feast" baseline; a writer process for the SQLite online store otherwise
            self._sink = FeastSink(open_store(s), s.feast_dir, mode=self._online_mode,
                                   background=self._online_mode == "direct")
        if self._matcher is None:
            from streaming._categories import make_matcher

            self._matcher = make_matcher(s.streaming.intent_matcher)
        p = s.streaming
        params = WindowParams(p.recent_n, p.top_categories, p.ctr_prior, p.ctr_prior_weight)
        start = getattr(self._sink, "start", None)
        if start is not None:   # the online writer process, before recover() writes
            from privacy import tombstone_path
            from streaming._online_writer import Recompute

            start(recompute=Recompute(str(state_path(s.data_dir)), str(s.feast_dir), str(tombstone_path(s.data_dir)),
                                      params))
        self.state = StateStore(state_path(s.data_dir))
        topics = {s.topic(k): k for k in self.streams}
        try:
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **KafkaDeadLetters.PRODUCER_CONFIG,
                                          client_id=f"sightline-ingest-dlq-{self.worker_id}")
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=s.streaming.group_id, enable_auto_commit=False,
                auto_offset_reset="earliest", max_poll_records=s.streaming.max_poll_records,
                session_timeout_ms=s.streaming.session_timeout_ms, heartbeat_interval_ms=s.streaming.session_timeout_ms // 4,
                max_poll_interval_ms=300_000, fetch_max_wait_ms=50, client_id=f"sightline-ingest-{self.worker_id}",
                max_partition_fetch_bytes=4 * 1024 * 1024)
        except KafkaError as exc:
            raise IngestUnavailable(f"no Kafka broker at {bootstrap}; start one with 'sightline stack up' "
                                    "or set SIGHTLINE_KAFKA_BOOTSTRAP") from exc
        self.dlq = KafkaDeadLetters(self.producer, self.worker_id)
        self.pipeline = Pipeline(
            kinds_by_topic=topics, state=self.state, sink=self._sink, dead_letters=self.dlq, matcher=self._matcher,
            data_dir=s.data_dir, worker_id=self.worker_id, max_message_bytes=p.max_message_bytes,
            params=params, hmac_key=s.privacy.hmac_key, tombstones=Tombstones(s))
        self.pipeline.recover()
        from kafka import ConsumerRebalanceListener

        worker = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                worker._flush_and_commit(reason="revoked")

            def on_partitions_assigned(self, assigned):
                if assigned:
                    worker._assigned_at = time.monotonic()
                log.info("worker %s assigned %s", worker.worker_id, sorted((tp.topic, tp.partition) for tp in assigned))

        self.consumer.subscribe(topics=sorted(topics), listener=_Listener())

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event | None = None, *, max_idle_s: float | None = None,
            on_batch=None) -> Counter:
        """Consume until ``stop`` is set, or no record arrived for ``max_idle_s`` seconds."""
        stop = stop or threading.Event()
        self._on_batch = on_batch
        self._build()
        # A batch allocates ~100 objects per event (protobufs, tuples, polars rows); with the
        # default gen-0 threshold (700) the cyclic GC runs hundreds of times per batch and walks
        # the long-lived imports (Feast, polars, torch) each full pass. Freezing what exists
        # after start-up and a larger gen-0 threshold: ~1.5x events/s (docs/streaming.md).
        gc.collect()
        gc.freeze()
        gc_threshold = gc.get_threshold()
        gc.set_threshold(_GC_GEN0_THRESHOLD, *gc_threshold[1:])
        s = self.settings.streaming
        last_record = time.monotonic()
        last_prune = 0.0
        try:
            while not stop.is_set():
                polled = self.consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=s.max_poll_records)
                if polled:
                    self._consent_first(polled)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    last_record = time.monotonic()
                    result = self.pipeline.process(records)
                    for tp, batch in polled.items():
                        self._positions[tp] = max(self._positions.get(tp, -1), batch[-1].offset + 1)
                    self.totals.update(result.counts)
                    self._rate.append((time.monotonic(), len(records)))
                    self._unwritten.append((getattr(self._sink, "submitted", 0), result))
                self._written()
                if time.monotonic() - self._last_flush >= s.flush_interval_s:
                    self._flush_and_commit(reason="interval")
                    if time.monotonic() - last_prune > 600:
                        last_prune = time.monotonic()
                        now_ms = int(time.time() * 1000)
                        self.state.prune(now_ms, D7 * MINUTE_MS + 3_600_000, s.dedupe_hours * 3_600_000)
                # idle time counts from the latest record or (re)assignment: joining a group
                # whose dead member has not timed out yet can take a session timeout
                if (max_idle_s is not None and self._assigned_at is not None
                        and time.monotonic() - max(last_record, self._assigned_at) > max_idle_s
                        and self._caught_up()):
                    break
            self._flush_and_commit(reason="stop")
        finally:
            gc.set_threshold(*gc_threshold)
            gc.unfreeze()
            self.close()
        return self.totals

    def _consent_first(self, polled: dict) -> None:
        """Add every consent record already in the broker (up to the last known high-water mark) to this batch.

        Consent and events are on separate topics, so a poll can return a user's event before
        the ConsentEvent produced ahead of it (a re-grant, a withdrawal); the pipeline applies
        a batch's consent events first, so draining the consent partitions here makes a consent
        event produced before an event apply before it. Other partitions are paused meanwhile
        (records they had fetched are fetched again: their positions did not move)."""
        consent_topic = self.settings.topic("consent")
        assigned = self.consumer.assignment()
        consent = [tp for tp in assigned if tp.topic == consent_topic]
        if not consent:
            return

        def behind() -> bool:
            for tp in consent:
                hw = self.consumer.highwater(tp)
                if hw is not None and self.consumer.position(tp) < hw:
                    return True
            return False

        if not behind():
            return
        others = [tp for tp in assigned if tp.topic != consent_topic]
        self.consumer.pause(*others)
        try:
            for _ in range(50):   # bounded: a consent topic written faster than we read is drained next round
                more = self.consumer.poll(timeout_ms=100, max_records=self.settings.streaming.max_poll_records)
                for tp, batch in more.items():
                    polled.setdefault(tp, []).extend(batch)
                if not behind():
                    break
        finally:
            self.consumer.resume(*others)

    def _written(self, sync: bool = False) -> None:
        """Report the batches whose online writes are committed (``sync``: wait for all of them).

        With a writer process the writes of a batch land after ``process`` returns; its
        freshness is measured at the writer's commit, and ``on_batch`` runs then."""
        sink = self._sink
        if sync and hasattr(sink, "sync"):   # also writes queued outside a batch (recover)
            acked, at = sink.sync()
        elif not self._unwritten:
            return
        elif hasattr(sink, "acknowledged"):
            acked, at = sink.acknowledged()
        else:
            acked, at = 0, time.time()
        while self._unwritten and self._unwritten[0][0] <= acked:
            seq, result = self._unwritten.popleft()
            if seq:   # written by the writer process: fresh at its commit
                result.freshness_s = [at - ts / 1000 for ts in result.event_ts_ms]
            self._fresh.extend(result.freshness_s)
            self._metrics.observe(result.counts, result.freshness_s)
            if self._on_batch is not None:
                self._on_batch(result)

    def _caught_up(self) -> bool:
        """True when every assigned partition has been consumed to its end offset."""
        assigned = self.consumer.assignment()
        if not assigned:   # not (yet) a member with partitions: a rebalance is probably under way
            return False
        try:
            ends = self.consumer.end_offsets(list(assigned))
            return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)
        except Exception as exc:  # broker hiccup: treat as not caught up, try again next round
            log.debug("end offsets unavailable: %s", exc)
            return False

    @property
    def _metrics(self) -> _Metrics:
        if not hasattr(self, "_metrics_obj"):
            port = self.settings.streaming.metrics_port
            self._metrics_obj = _Metrics(None if port is None else port + int(self.worker_id), self.worker_id)
        return self._metrics_obj

    def _flush_and_commit(self, reason: str) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        self._written(sync=True)   # online rows first: offsets are committed only after every feature write
        self.totals.update(self.pipeline.flush())
        self.dlq.flush()
        self._last_flush = time.monotonic()
        if self._positions:
            offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._positions.items()}
            try:
                self.consumer.commit(offsets)
                self._positions.clear()
            except (CommitFailedError, KafkaError, RuntimeError) as exc:
                # a rebalance took the partitions, or kafka-python ran the revocation listener on
                # its IO thread, where a blocking commit is refused (RuntimeError; seen in CI when
                # the rebalance began between polls): either way the new owner replays from the
                # last commit and the shared de-duplication state drops what was already applied
                log.warning("worker %s: commit after %s failed (%s); the new owner replays, de-duplicated",
                            self.worker_id, reason, exc)
                self._positions.clear()
        self.state.save_counters(self.worker_id, self.stats())

    def stats(self) -> dict[str, float]:
        """Counters, events/s over the last minute and freshness p50/p99 of recent events."""
        out = {k: float(v) for k, v in self.totals.items()}
        now = time.monotonic()
        recent = [(t, n) for t, n in self._rate if now - t <= 60]
        if recent:
            span = max(now - recent[0][0], 1.0)
            out["events_per_s"] = sum(n for _, n in recent) / span
        if self._fresh:
            ordered = sorted(self._fresh)
            out["freshness_p50_s"] = ordered[len(ordered) // 2]
            out["freshness_p99_s"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return out

    def close(self) -> None:
        for name in ("consumer", "producer"):
            client = getattr(self, name, None)
            if client is not None:
                try:
                    client.close(autocommit=False) if name == "consumer" else client.close(timeout=10)
                except Exception as exc:  # closing must not mask the real error
                    log.debug("closing %s: %s", name, exc)
        if hasattr(self, "state"):
            self.state.close()
        close = getattr(self._sink, "close", None)
        if close is not None:
            close()
