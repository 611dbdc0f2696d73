"""Feast SQLite online writes of user-keyed views in a child process of the worker, in batch order.

Why a process: the upserts into Feast's online table (one row per entity and feature,
~6 per context event) were the largest single cost of a worker (bench.ingest), and
SQLite work in a thread of the same process fights the main loop for the GIL on every
row it binds. A child process does the encoding and the upserts on the other core
while the worker decodes and de-duplicates the next batch.

With ``Recompute`` the child also *computes* the user-keyed views: the worker sends
the touched user ids after its state transaction committed, and the child reads their
buckets from the state store, runs the polars windows, upserts the rows and buffers
them for the offline store, which it writes when the worker flushes (``flush_offline``,
before the dirty marks are cleared and offsets committed). Those bucket reads and
windows were the worker's largest remaining cost (bench.ingest: 13.6k → 18.3k events/s
in the stage run). Users are partitioned by key, so one worker's child owns a user at a
time; a consent withdrawal reaches the child in order with the writes (``delete``
names the users) and drops their buffered rows.

The protocol keeps the offset-commit guarantee: every write and delete gets a sequence
number; the child applies them strictly in order, one transaction each, and acks the
sequence number with the commit time. The worker commits offsets only after
``sync()`` has seen every submitted sequence acknowledged, and measures freshness
at the ack. If the worker dies the child is killed with it (``PR_SET_PDEATHSIG``, and
it stops at the closed pipe), so no write of a dead worker lands after its
successor's; if the child dies, the worker's next call raises ``IngestUnavailable``
and the batches not yet committed are replayed (de-duplicated) by the restarted worker.
"""

from __future__ import annotations

import gc
import io
import logging
import multiprocessing
import queue
import threading
import time
from pathlib import Path

from dataclasses import dataclass

import polars as pl

from streaming._windows import WindowParams
from streaming.errors import IngestUnavailable

log = logging.getLogger(__name__)

_MAX_IN_FLIGHT = 8          # submitted but unacknowledged messages before ``submit`` waits
_READY_TIMEOUT_S = 120.0    # child start-up: imports of polars and Feast's protos
_CHUNK_ROWS = 4000          # rows per transaction in the child
_GC_GEN0_THRESHOLD = 50_000 # allocations between young-generation collections in the child


@dataclass(frozen=True)
class Recompute:
    """What the child needs to compute user-keyed features itself: the worker's state store
    (read only, after the worker's transaction committed), the offline store and the
    tombstones (rows of users erased meanwhile never reach the offline store)."""

    state_db: str
    feast_dir: str
    tombstones: str
    params: WindowParams


class OnlineWriter:
    """The worker's handle on its writer process (one per ``FeastSink`` that starts one).

    ``tables``: view → Feast's SQLite table name; ``fields``/``entities``/``key_prefix``
    as ``SqliteRowEncoder`` takes them (the prefix must not be None: the child has no
    Feast serializer)."""

    def __init__(self, db_path: Path, tables: dict[str, str], fields: dict, entities: dict[str, str],
                 key_prefix: dict[str, bytes], *, max_in_flight: int = _MAX_IN_FLIGHT,
                 recompute: Recompute | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, name="sightline-online-writer", daemon=True,
                                 args=(child, str(db_path), tables, fields, entities, key_prefix, recompute))
        self.recomputes = recompute is not None
        self._replies: dict[int, dict] = {}
        self._proc.start()
        child.close()
        self._db_path = db_path
        self._max_in_flight = max_in_flight
        self._sent = 0
        self._acked = 0
        self._acked_at = 0.0
        self._closed = False
        self._ready = False   # the child's start-up overlaps the worker's (Kafka clients, group join)

    # -- parent side ----------------------------------------------------------------
    def _dead(self, why: str) -> IngestUnavailable:
        self._closed = True
        return IngestUnavailable(f"the online-store writer process {why}; check that {self._db_path} is writable "
                                 "(disk space, permissions, no other process locking it) and restart the worker: "
                                 "uncommitted batches are replayed")

    def _receive(self, *, block: bool, timeout: float | None = None, ready: bool = False) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.0 if not block else (None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                if not self._conn.poll(wait if wait is None else min(wait, 1.0)):
                    if not self._proc.is_alive():
                        raise self._dead(f"exited with code {self._proc.exitcode}")
                    if block and (deadline is None or time.monotonic() < deadline):
                        continue
                    if block:
                        raise self._dead(f"did not answer within {timeout:.0f} s")
                    return
                msg = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise self._dead(f"closed its pipe ({exc})") from None
            kind = msg[0]
            if kind == "error":
                raise self._dead(f"failed: {msg[1]}")
            if kind == "ready":
                self._ready = True
                if ready:
                    return
                continue
            self._acked, self._acked_at = msg[1], msg[2]
            if len(msg) > 3:
                self._replies[msg[1]] = msg[3]
            if block and not ready:
                return

    def _submit(self, message: tuple) -> int:
        if self._closed:
            raise self._dead("was stopped")
        self._receive(block=False)
        if not self._ready:
            self._receive(block=True, timeout=_READY_TIMEOUT_S, ready=True)
        while self._sent - self._acked >= self._max_in_flight:
            self._receive(block=True)
        self._sent += 1
        try:
            self._conn.send((message[0], self._sent, *message[1:]))
        except (BrokenPipeError, OSError) as exc:
            raise self._dead(f"closed its pipe ({exc})") from None
        return self._sent

    def write(self, view: str, frame: pl.DataFrame) -> int:
        """Queue an upsert of ``frame``'s rows of ``view``; returns its sequence number."""
        buf = io.BytesIO()
        frame.write_ipc(buf, compression="uncompressed")
        return self._submit(("w", view, buf.getvalue()))

    def delete(self, table_keys: list[tuple[str, list[bytes]]], user_ids: list[str] = ()) -> int:
        """Queue deletes of serialized entity keys per table (after every write queued before);
        ``user_ids``: also drop their rows from the offline rows the child buffers."""
        return self._submit(("d", table_keys, list(user_ids)))

    def recompute(self, view: str, code: str, entities: list[str]) -> int:
        """Queue: compute ``view``'s rows of ``entities`` from the committed buckets of bucket view
        ``code``, upsert them online, buffer them for the offline store (needs ``recompute``)."""
        return self._submit(("r", view, code, entities))

    def flush_offline(self) -> dict[str, int]:
        """Write the buffered offline rows (after everything queued before); rows per view."""
        seq = self._submit(("f",))
        self.sync()
        return self._replies.pop(seq, {})

    @property
    def submitted(self) -> int:
        return self._sent

    def acknowledged(self) -> tuple[int, float]:
        """(highest sequence number committed, its commit time as ``time.time()``), without waiting."""
        self._receive(block=False)
        return self._acked, self._acked_at

    def sync(self, timeout_s: float = 300.0) -> tuple[int, float]:
        """Wait until everything submitted is committed."""
        deadline = time.monotonic() + timeout_s
        while self._acked < self._sent:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._dead(f"had {self._sent - self._acked} writes outstanding after {timeout_s:.0f} s")
            self._receive(block=True, timeout=left)
        return self._acked, self._acked_at

    def close(self) -> None:
        """Stop the child after the writes already queued (call ``sync`` first to be sure they landed)."""
        if not self._closed:
            self._closed = True
            try:
                self._conn.send(("stop", 0))
            except (BrokenPipeError, OSError):
                pass
        self._proc.join(30)
        if self._proc.is_alive():
            log.warning("online-store writer pid %s did not stop in 30 s; killing it", self._proc.pid)
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


# -- child side -----------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the worker dies (no write may land after a successor's)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):   # not Linux: the closed pipe still stops the loop
        pass


class _Features:
    """The child's side of ``Recompute``: bucket reads, feature rows and the offline buffer."""

    def __init__(self, spec: Recompute) -> None:
        from privacy import Tombstones
        from streaming._state import StateStore

        self.spec = spec
        self.state = StateStore(Path(spec.state_db))
        self.tombstones = Tombstones(path=Path(spec.tombstones))
        self.offline: dict[str, list[pl.DataFrame]] = {}

    def rows(self, view: str, code: str, entities: list[str]) -> pl.DataFrame:
        from streaming._windows import compute_features

        rows = compute_features(view, self.state.buckets(code, entities), self.spec.params)
        self.offline.setdefault(view, []).append(rows)
        return rows

    def forget(self, user_ids: list[str]) -> None:
        if user_ids:
            self.offline = {view: [f.filter(~pl.col("user_id").is_in(user_ids)) for f in frames]
                            for view, frames in self.offline.items()}

    def flush(self) -> dict[str, int]:
        from features import write_offline
        from streaming._pipeline import offline_frame

        written = {}
        for view, frames in self.offline.items():
            frame = offline_frame(view, frames, self.tombstones)
            if frame is not None:
                write_offline(Path(self.spec.feast_dir), view, frame)
                written[f"offline.{view}"] = frame.height
        self.offline.clear()
        return written


def _serve(conn, db_path: str, tables: dict[str, str], fields: dict, entities: dict[str, str],
           key_prefix: dict[str, bytes], recompute: Recompute | None = None) -> None:
    import os
    import sqlite3

    _die_with_parent()
    parent = os.getppid()
    try:
        from streaming._online_rows import SqliteRowEncoder, upsert_sql

        encoder = SqliteRowEncoder(fields, entities, key_prefix)
        db = sqlite3.connect(db_path, timeout=60.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")      # readers (serving) never block on this writer
        db.execute("PRAGMA synchronous=NORMAL")    # durable across process crashes; offsets replay the rest
        statements = {view: upsert_sql(table) for view, table in tables.items()}
        computed = _Features(recompute) if recompute is not None else None
    except Exception as exc:   # report why, then exit: the worker raises IngestUnavailable
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    # as in the worker's loop: each message allocates a few objects per row (tuples, bytes,
    # polars rows); freeze the start-up objects and collect the young generation less often
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    conn.send(("ready",))
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        # drains the pipe while the main thread is inside SQLite, so the worker never blocks on send
        try:
            while True:
                msg = conn.recv()
                inbox.put(msg)
                if msg[0] == "stop":
                    return
        except (EOFError, OSError):
            inbox.put(("stop", 0))

    threading.Thread(target=read, name="online-writer-inbox", daemon=True).start()
    while True:
        msg = inbox.get()
        kind, seq = msg[0], msg[1]
        if kind == "stop" or os.getppid() != parent:
            break
        reply = None
        try:
            if kind in ("w", "r"):
                view = msg[2]
                frame = pl.read_ipc(io.BytesIO(msg[3])) if kind == "w" else computed.rows(view, msg[3], msg[4])
                rows = encoder.rows(view, frame) if frame.height else []
                for i in range(0, len(rows), _CHUNK_ROWS):   # short transactions: the worker writes shared rows inline
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(statements[view], rows[i:i + _CHUNK_ROWS])
                    db.execute("COMMIT")
            elif kind == "d":
                db.execute("BEGIN IMMEDIATE")
                for table, keys in msg[2]:
                    db.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', [(k,) for k in keys])
                db.execute("COMMIT")
                if computed is not None:
                    computed.forget(msg[3])
            elif kind == "f":
                reply = computed.flush() if computed is not None else {}
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ack", seq, time.time()) if reply is None else ("ack", seq, time.time(), reply))
    db.close()
    if computed is not None:
        computed.state.close()
