"""The worker's durable local state: processed event ids, window buckets, consent.

One SQLite database (WAL) under ``<data_dir>/streaming/state.db``, shared by every
worker process on the host, so a partition that moves to another worker, or a worker
restarted after a crash, finds the windows where the last one left them. A batch's
de-duplication, bucket increments, dirty marks and pending event-log rows are written
in one transaction *before* its features are pushed and its offsets committed: a
replayed event is recognised by its ``event_id`` and adds nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from streaming._consent import Purposes
from streaming._windows import BUCKET_SCHEMA, USER_BUCKET_VIEWS
from streaming.errors import StateStoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 900

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ts ON seen(ts);
CREATE TABLE IF NOT EXISTS buckets (
    view TEXT NOT NULL, entity TEXT NOT NULL, sub TEXT NOT NULL, minute INTEGER NOT NULL,
    n1 INTEGER NOT NULL, n2 INTEGER NOT NULL, n3 INTEGER NOT NULL, x REAL NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (view, entity, sub, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty (worker TEXT NOT NULL, view TEXT NOT NULL, entity TEXT NOT NULL,
    PRIMARY KEY (worker, view, entity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consent (
    user_id TEXT PRIMARY KEY, ts INTEGER NOT NULL,
    context INTEGER NOT NULL, personalization INTEGER NOT NULL, measurement INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_log (
    kind TEXT NOT NULL, event_id TEXT NOT NULL, created_ms INTEGER NOT NULL, payload BLOB NOT NULL,
    personalization INTEGER NOT NULL, measurement INTEGER NOT NULL, PRIMARY KEY (kind, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (worker TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (worker, name)) WITHOUT ROWID;
"""

# counters a bucket view never sets (streaming._windows' table): not read back
_UNUSED_COUNTERS = {"uc": ("n2", "n3", "x"), "ue": ("n3", "x"), "it": ("x",), "cp": ("x",)}

_UPSERT = """
INSERT INTO buckets (view, entity, sub, minute, n1, n2, n3, x, last_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (view, entity, sub, minute) DO UPDATE SET
    n1 = n1 + excluded.n1, n2 = n2 + excluded.n2, n3 = n3 + excluded.n3, x = x + excluded.x,
    last_ts = max(last_ts, excluded.last_ts)
"""


class _Connection(sqlite3.Connection):
    """A connection that remembers whether its open transaction erased users (to checkpoint after it)."""

    erased = False


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / "streaming" / "state.db"


def _chunks(items: list, size: int = _CHUNK) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class StateStore:
    """SQLite-backed durable state of the ingest workers (one connection per process)."""

    def __init__(self, path: Path, timeout_s: float = 60.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False,
                                       factory=_Connection)
            self._db.execute("PRAGMA journal_mode=WAL")
            # deleted rows (an erased user's consent, buckets, parked events) are overwritten, not left in free pages
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")   # durable across process crashes (not power loss)
            # 48 MB of page cache: a batch touches most pages of the bucket and seen trees
            self._db.execute("PRAGMA cache_size=-49152")
            self._db.executescript(_DDL)
            # a second b-tree on buckets doubled the cost of every bucket upsert; prune scans instead
            self._db.execute("DROP INDEX IF EXISTS buckets_minute")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open the ingest state store {path}: {exc}; check the disk and permissions") from exc
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StateStoreError(f"state store {path} has schema {row[0]}, this code needs {SCHEMA_VERSION}; "
                                  "move it away and replay the topics from the earliest offsets")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction (one writer at a time across worker processes)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if self._db.erased:
            self._db.erased = False
            self.checkpoint()

    @contextmanager
    def shared_rows_lock(self) -> Iterator[None]:
        """Held by a worker from reading the buckets of shared entities (items, campaigns,
        scene x category) to writing their online rows. Every worker on the host writes
        those rows; without it, a row computed before another worker's commit could be
        written after that worker's newer row and stay there (a regression the two-worker
        hand-over test caught: an ``events_1h`` of 3 where the events gave 1). An OS file
        lock: released if the worker dies."""
        with self._host_lock("shared-rows"):
            yield

    @contextmanager
    def event_log_lock(self) -> Iterator[None]:
        """Held by a worker from reading the parked event-log rows (``pending``) to clearing
        the ones it wrote. The parked rows are the host's, not the worker's (a worker that
        died leaves its rows to the others), so two workers flushing at once both wrote
        the same rows: the two-worker hand-over test found events logged twice."""
        with self._host_lock("event-log"):
            yield

    @contextmanager
    def _host_lock(self, name: str) -> Iterator[None]:
        """An OS file lock next to the store, shared by every worker on the host."""
        import fcntl

        with open(self.path.with_name(f"{self.path.name}.{name}.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after an erasure: the WAL still holds
        the pages as they were before the delete). Best effort while other workers read."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("state store checkpoint after an erasure failed (%s); it completes at the next one", exc)

    # -- de-duplication -------------------------------------------------------------
    def unseen(self, db: sqlite3.Connection, event_ids: list[str]) -> set[str]:
        """The ids among ``event_ids`` not processed before (call inside ``transaction``)."""
        seen: set[str] = set()
        for chunk in _chunks(event_ids):
            q = f"SELECT event_id FROM seen WHERE event_id IN ({','.join('?' * len(chunk))})"
            seen.update(r[0] for r in db.execute(q, chunk))
        return set(event_ids) - seen

    @staticmethod
    def mark_seen(db: sqlite3.Connection, ids_ts: Iterable[tuple[str, int]]) -> None:
        db.executemany("INSERT OR IGNORE INTO seen (event_id, ts) VALUES (?, ?)", ids_ts)

    # -- window buckets -------------------------------------------------------------
    @staticmethod
    def add_buckets(db: sqlite3.Connection, deltas: pl.DataFrame) -> None:
        """Add bucket deltas, in primary-key order (neighbouring keys share b-tree pages)."""
        if deltas.height:
            db.executemany(_UPSERT, deltas.select(list(BUCKET_SCHEMA)).sort("view", "entity", "sub", "minute").iter_rows())

    @staticmethod
    def mark_dirty(db: sqlite3.Connection, worker: str, keys: Iterable[tuple[str, str]]) -> None:
        """Entities whose offline snapshot this worker still owes (recomputed after a crash)."""
        db.executemany("INSERT OR IGNORE INTO dirty (worker, view, entity) VALUES (?, ?, ?)",
                       ((worker, v, e) for v, e in keys))

    def buckets(self, view: str, entities: list[str]) -> pl.DataFrame:
        """Every stored bucket of ``entities`` in bucket view ``view``.

        Counters a view never uses (the user views count in ``n1``/``n2`` only) are not read
        but returned as zeros: the read of the user views' buckets is the largest cost of
        the feature computation, and each column costs a Python object per bucket."""
        names = [n for n in BUCKET_SCHEMA if n != "view"]
        read = [n for n in names if n not in _UNUSED_COUNTERS.get(view, ())]
        rows: list[tuple] = []
        for chunk in _chunks(sorted(set(entities))):
            q = (f"SELECT {', '.join(read)} FROM buckets "
                 f"WHERE view = ? AND entity IN ({','.join('?' * len(chunk))})")
            rows.extend(self._db.execute(q, [view, *chunk]))
        columns = dict(zip(read, map(list, zip(*rows)))) if rows else {n: [] for n in read}
        # built column-wise (row tuples → polars cost ~30% more per bucket)
        frame = pl.DataFrame(columns, schema={n: BUCKET_SCHEMA[n] for n in read})
        return frame.select(pl.lit(view, pl.String).alias("view"),
                            *[pl.col(n) if n in read else pl.lit(0, BUCKET_SCHEMA[n]).alias(n) for n in names])

    def dirty(self, worker: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for view, entity in self._db.execute("SELECT view, entity FROM dirty WHERE worker = ?", (worker,)):
            out.setdefault(view, []).append(entity)
        return out

    def clear_dirty(self, worker: str, keys: dict[str, list[str]]) -> None:
        with self.transaction() as db:
            for view, entities in keys.items():
                db.executemany("DELETE FROM dirty WHERE worker = ? AND view = ? AND entity = ?",
                               [(worker, view, e) for e in entities])

    # -- consent ----------------------------------------------------------------------
    def consent(self, user_ids: Iterable[str]) -> dict[str, Purposes]:
        out: dict[str, Purposes] = {}
        for chunk in _chunks(sorted(set(user_ids))):
            q = f"SELECT user_id, context, personalization, measurement FROM consent WHERE user_id IN ({','.join('?' * len(chunk))})"
            for user, c, p, m in self._db.execute(q, chunk):
                out[user] = Purposes(bool(c), bool(p), bool(m))
        return out

    @staticmethod
    def set_consent(db: sqlite3.Connection, user_id: str, ts: int, purposes: Purposes) -> bool:
        """Record the user's consent if newer than what is stored; True if it changed the record."""
        cur = db.execute(
            "INSERT INTO consent VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
            "ts = excluded.ts, context = excluded.context, personalization = excluded.personalization, "
            "measurement = excluded.measurement WHERE excluded.ts >= consent.ts",
            (user_id, ts, purposes.context, purposes.personalization, purposes.measurement))
        return cur.rowcount > 0

    @staticmethod
    def erase_user_state(db: sqlite3.Connection, user_ids: list[str], *, keep_consent: bool = False) -> None:
        """Delete every user-keyed bucket and dirty mark of ``user_ids`` and, unless ``keep_consent``
        (a consent withdrawal, which must remember the withdrawal), their consent rows (erasure).

        With ``secure_delete`` the freed pages are zeroed; the owning ``StateStore`` checkpoints
        and truncates the WAL after the transaction commits."""
        for view in USER_BUCKET_VIEWS:
            db.executemany("DELETE FROM buckets WHERE view = ? AND entity = ?", [(view, u) for u in user_ids])
            db.executemany("DELETE FROM dirty WHERE view = ? AND entity = ?", [(view, u) for u in user_ids])
        if not keep_consent:
            db.executemany("DELETE FROM consent WHERE user_id = ?", [(u,) for u in user_ids])
        if not keep_consent and isinstance(db, _Connection):
            db.erased = True

    # -- pending event-log rows -----------------------------------------------------
    @staticmethod
    def add_pending(db: sqlite3.Connection, rows: Iterable[tuple[str, str, int, bytes, bool, bool]]) -> None:
        db.executemany("INSERT OR IGNORE INTO pending_log VALUES (?, ?, ?, ?, ?, ?)", rows)

    def pending(self, kind: str) -> list[tuple[str, int, bytes, bool, bool]]:
        return list(self._db.execute(
            "SELECT event_id, created_ms, payload, personalization, measurement FROM pending_log WHERE kind = ? "
            "ORDER BY created_ms", (kind,)))

    def clear_pending(self, kind: str, event_ids: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM pending_log WHERE kind = ? AND event_id = ?", [(kind, e) for e in event_ids])

    # -- housekeeping and counters ----------------------------------------------------
    def prune(self, now_ms: int, bucket_keep_ms: int, seen_keep_ms: int) -> None:
        """Forget buckets and event ids older than any window/de-duplication horizon."""
        with self.transaction() as db:
            db.execute("DELETE FROM buckets WHERE minute < ?", ((now_ms - bucket_keep_ms) // 60_000,))
            db.execute("DELETE FROM seen WHERE ts < ?", (now_ms - seen_keep_ms,))

    def save_counters(self, worker: str, counters: dict[str, float]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)",
                           [(worker, k, float(v)) for k, v in counters.items()])
            db.execute("INSERT OR REPLACE INTO counters VALUES (?, 'updated_ms', ?)", (worker, time.time() * 1000))

    def counters(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for worker, name, value in self._db.execute("SELECT worker, name, value FROM counters"):
            out.setdefault(worker, {})[name] = value
        return out
