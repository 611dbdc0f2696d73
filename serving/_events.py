"""Event logging off the request path: a buffered background Kafka producer.

Recommend and ReportFeedback only ``send()`` an already built protobuf message.
kafka-python's producer (idempotent, acks=all, unlimited retries) is pure Python: ~40 µs
of CPU per record for partitioning, record-batch encoding and its network thread, i.e.
~0.5 ms per Recommend (13 events) spent holding the server's GIL. So by default
(``process=True``) the producer runs in a **child process**: ``send`` serialises the
message (C, ~2 µs) onto a list, and a pump thread hands the accumulated records to the
child through a pipe, one pickled batch every few milliseconds. With ``process=False`` a
thread in this process runs the producer (the old way; tests of the thread path).
``close()`` drains the buffer and flushes the producer either way, so a clean shutdown
loses nothing; a full buffer makes ``send`` wait (back-pressure) rather than drop.
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

    def __init__(self, bootstrap: str, *, max_buffer: int = 100_000, linger_ms: int = 20,
                 compression: str | None = "gzip", producer_factory: Callable[..., object] | None = None,
                 process: bool = False, batch_interval_s: float = 0.005) -> None:
        if process and producer_factory is not None:
            raise ValueError("producer_factory needs process=False (the child process builds its own producer)")
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

    def start(self) -> "KafkaEventLog":
        if self._thread is not None:
            return self
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
        if self._thread is None:
            raise RuntimeError("KafkaEventLog.send before start(); call start() when the server starts")
        if not self._process_mode:
            self._queue.put((topic, message))
            return
        record = (topic, message.user_id.encode(), message.SerializeToString(), message.DESCRIPTOR.full_name.encode())
        with self._cond:
            while len(self._pending) >= self._max_buffer:
                self._cond.wait(0.1)
            self._pending.append(record)
            if len(self._pending) == 1:
                self._cond.notify_all()

    def send_many(self, topic: str, messages) -> None:
        """``send`` for each message, queued under one lock (a Recommend logs ~13 events)."""
        if self._thread is None:
            raise RuntimeError("KafkaEventLog.send_many before start(); call start() when the server starts")
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
