"""Event logging off the request path: a buffered Kafka producer.

Recommend and ReportFeedback only ``send()`` an already built protobuf message. Two
clients:

- ``client="librdkafka"`` (the default): confluent-kafka's producer. ``send`` serialises
  the message and hands it to librdkafka's queue (C, a few µs); batching, compression,
  retries and the network run on librdkafka's own threads without the GIL, and a thread
  here serves delivery reports. Measured on the 2-core machine: ~0.6-0.8 ms of CPU per
  Recommend's 13 events, against ~2-3 ms for kafka-python's producer in its child process.
- ``client="kafka-python"``: kafka-python's pure-Python producer (~150 µs of CPU per
  record on that machine). With ``process=True`` it runs in a **child process** (``send``
  serialises onto a list, a pump thread hands pickled batches to the child through a pipe
  every few ms), so its Python stays off the server's GIL; with ``process=False`` a
  thread of this process runs it (``producer_factory`` lets tests inject a fake).

Either way: idempotent, acks=all, retried without limit; ``close()`` drains the buffer
and flushes the producer, so a clean shutdown loses nothing; a full buffer makes ``send``
wait (back-pressure) rather than drop.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

SCHEMA_HEADER = "schema"
CLIENTS = ("librdkafka", "kafka-python")
_STOP = object()


class MemoryEventLog:
    """An in-memory event sink with the same interface (unit tests, benchmarks)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def send(self, topic: str, message) -> None:
        with self._lock:
            self.events.append((topic, message))

    def send_many(self, topic: str, messages) -> None:
        with self._lock:
            self.events.extend((topic, m) for m in messages)

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

    # linger 100 ms: the broker's CPU per Recommend's 13 events was ~3.9 ms at 20 ms and ~1.3 ms at
    # 100 ms (fewer, larger produce requests on the same 2 cores); an impression reaches the log
    # ~0.1 s later, which nothing on the request path waits for
    def __init__(self, bootstrap: str, *, max_buffer: int = 100_000, linger_ms: int = 100,
                 compression: str | None = "gzip", producer_factory: Callable[..., object] | None = None,
                 process: bool = False, batch_interval_s: float = 0.005, client: str = "librdkafka") -> None:
        if client not in CLIENTS:
            raise ValueError(f"unknown Kafka client {client!r}; use one of {', '.join(CLIENTS)}")
        if client == "librdkafka" and (process or producer_factory is not None):
            raise ValueError("process and producer_factory are options of client='kafka-python'")
        if process and producer_factory is not None:
            raise ValueError("producer_factory needs process=False (the child process builds its own producer)")
        self._rd = client == "librdkafka"
        self._rd_stop = threading.Event()
        self._process_mode = process
        self._max_buffer = max_buffer
        self._batch_interval_s = batch_interval_s
        self._pending: list = []
        self._cond = threading.Condition()
        self._stopping = False
        self._child = None
        self._conn = None
        self._reply = None
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

    @classmethod
    def from_settings(cls, settings, bootstrap: str) -> "KafkaEventLog":
        """The event log ``settings.serving`` describes (client, child process, buffer)."""
        cfg = settings.serving
        client = cfg.event_log_client
        compression = None if cfg.event_log_compression == "none" else cfg.event_log_compression
        return cls(bootstrap, max_buffer=cfg.log_buffer, client=client, compression=compression,
                   process=cfg.event_log_process and client == "kafka-python")

    def start(self) -> "KafkaEventLog":
        if self._thread is not None:
            return self
        if self._rd:
            return self._start_rdkafka()
        if self._process_mode:
            return self._start_process()
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
        self.send_many(topic, [message])

    def send_many(self, topic: str, messages) -> None:
        """Queue a list of messages for ``topic`` under one lock (a Recommend logs ~13 events)."""
        if self._thread is None:
            raise RuntimeError("KafkaEventLog.send before start(); call start() when the server starts")
        if self._rd:
            for message in messages:
                self._produce(topic, message)
            with self._lock:
                self.sent += len(messages)
            return
        if not self._process_mode:
            for message in messages:
                self._queue.put((topic, message))
            return
        records = [(topic, m.user_id.encode(), m.SerializeToString(), m.DESCRIPTOR.full_name.encode()) for m in messages]
        with self._cond:
            while len(self._pending) >= self._max_buffer:
                self._cond.wait(0.1)
            was_empty = not self._pending
            self._pending.extend(records)
            if was_empty:
                self._cond.notify_all()

    @property
    def stats(self) -> dict:
        if self._rd:
            return {"sent": self.sent, "failed": self.failed, "queued": len(self._producer) if self._producer else 0}
        queued = len(self._pending) if self._process_mode else self._queue.qsize()
        return {"sent": self.sent, "failed": self.failed, "queued": queued}

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
        if self._rd:
            self._close_rdkafka(timeout)
            return
        if self._process_mode:
            self._close_process(timeout)
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        try:
            self._producer.flush(timeout=timeout)
            self._producer.close(timeout=timeout)
        finally:
            self._thread = None
        log.info("event log closed: %d sent, %d failed", self.sent, self.failed)

    # -- librdkafka (confluent-kafka) ------------------------------------------------------
    def _start_rdkafka(self) -> "KafkaEventLog":
        from confluent_kafka import KafkaException, Producer

        self._producer = Producer({
            "bootstrap.servers": self._bootstrap, "client.id": "sightline-serving",
            "acks": "all", "enable.idempotence": True, "linger.ms": self._linger_ms,
            "compression.type": self._compression or "none",
            "queue.buffering.max.messages": self._max_buffer,
            "message.timeout.ms": 0,                     # retry until delivered (as kafka-python's retries)
            "delivery.report.only.error": True,          # no Python callback per delivered event (13 per Recommend)
        }, logger=logging.getLogger("serving.kafka"))    # librdkafka's own log lines, through logging
        try:                                             # librdkafka connects lazily: fail now, not on the first send
            self._producer.list_topics(timeout=10)
        except KafkaException as exc:
            self._producer = None
            raise RuntimeError(f"no Kafka broker answered at {self._bootstrap}: {exc}") from exc
        self._rd_stop.clear()
        self._thread = threading.Thread(target=self._poll_rdkafka, name="serving-event-log", daemon=True)
        self._thread.start()
        return self

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self._on_error(RuntimeError(str(err)))

    def _produce(self, topic: str, message) -> None:
        value, key = message.SerializeToString(), message.user_id.encode()
        headers = [(SCHEMA_HEADER, message.DESCRIPTOR.full_name.encode())]
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
                return
            except BufferError:                          # librdkafka's queue is full: wait for it (never drop)
                self._producer.poll(0.05)

    def _poll_rdkafka(self) -> None:
        """Serve delivery reports (failures are counted) until ``close``."""
        while not self._rd_stop.is_set():
            self._producer.poll(0.2)

    def _close_rdkafka(self, timeout: float) -> None:
        self._rd_stop.set()
        self._thread.join(timeout)
        try:
            left = self._producer.flush(timeout)
            if left:
                with self._lock:
                    self.failed += left
                log.error("event log: %d events not delivered to Kafka within %.0f s of shutdown", left, timeout)
        finally:
            self._thread = None
        log.info("event log closed: %d sent, %d failed", self.sent, self.failed)

    # -- producer in a child process ------------------------------------------------------
    def _start_process(self) -> "KafkaEventLog":
        # a plain subprocess, not multiprocessing: spawn would re-import the caller's __main__
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-c", "import sys; from serving._events import _producer_stdio; _producer_stdio(sys.argv[1:])",
               self._bootstrap, str(self._linger_ms), self._compression or ""]
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self._conn = Connection(os.dup(self._child.stdin.fileno()), readable=False)
        self._reply = Connection(os.dup(self._child.stdout.fileno()), writable=False)
        self._child.stdin.close()
        self._child.stdout.close()
        if not self._reply.poll(60):
            self._child.kill()
            raise RuntimeError("the event-log producer process did not start within 60 s")
        try:
            reply = pickle.loads(self._reply.recv_bytes())
        except EOFError:
            reply = ("error", f"the producer process exited with {self._child.wait(5)}")
        if reply[0] != "ready":
            self._child.wait(5)
            raise RuntimeError(f"cannot create the Kafka producer: {reply[1]}")
        self._stopping = False
        self._thread = threading.Thread(target=self._pump, name="serving-event-log-pump", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        """Hand what accumulated to the child, one pickled batch per ``batch_interval_s``."""
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                batch, self._pending = self._pending, []
                stopping = self._stopping
                self._cond.notify_all()                  # senders waiting on a full buffer
            if batch:
                try:
                    self._conn.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                    self.sent += len(batch)
                except (OSError, EOFError) as exc:        # the child died: count, keep draining
                    self._on_error(exc)
                    with self._lock:
                        self.failed += len(batch) - 1
            if stopping and not batch:
                return
            time.sleep(self._batch_interval_s)

    def _close_process(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        try:
            self._conn.send_bytes(b"")                   # end of stream: the child flushes and reports
            if self._reply.poll(timeout):
                _, sent, failed, error = pickle.loads(self._reply.recv_bytes())
                with self._lock:
                    self.failed += failed
                    if error:
                        self.last_error = RuntimeError(error)
                if failed:
                    log.error("event delivery to Kafka failed after retries for %d events: %s", failed, error)
            else:
                log.error("the event-log producer process did not finish within %.0f s", timeout)
        except (OSError, EOFError) as exc:
            self._on_error(exc)
        finally:
            try:
                self._child.wait(timeout)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                self._child.kill()
            self._conn.close()
            self._reply.close()
            self._thread = None
        log.info("event log closed: %d sent, %d failed", self.sent, self.failed)


def _producer_stdio(argv: list[str]) -> None:
    """Entry of the producer process: frames on stdin, replies on stdout."""
    import os
    from multiprocessing.connection import Connection

    bootstrap, linger_ms, compression = argv
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)                                        # stray prints must not corrupt the reply channel
    _producer_main(Connection(os.dup(0), writable=False), out, bootstrap, int(linger_ms), compression or None)


def _producer_main(conn, out, bootstrap: str, linger_ms: int, compression: str | None) -> None:
    """Child process: records from ``conn`` into kafka-python's producer; b"" (or EOF) ends it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)         # the parent decides when to stop (SIGTERM too)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, enable_idempotence=True,
            compression_type=compression, batch_size=256 * 1024, client_id="sightline-serving")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        out.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
        return
    out.send_bytes(pickle.dumps(("ready",)))
    state = {"sent": 0, "failed": 0, "error": ""}

    def on_error(exc) -> None:
        state["failed"] += 1
        state["error"] = f"{type(exc).__name__}: {exc}"

    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            data = b""
        if not data:
            break
        for topic, key, value, schema in pickle.loads(data):
            try:
                producer.send(topic, key=key, value=value, headers=[(SCHEMA_HEADER, schema)]).add_errback(on_error)
                state["sent"] += 1
            except Exception as exc:  # noqa: BLE001 - count and keep going
                on_error(exc)
    producer.flush(timeout=30)
    producer.close(timeout=30)
    try:
        out.send_bytes(pickle.dumps(("done", state["sent"], state["failed"], state["error"])))
    except (OSError, EOFError):
        pass
