"""Frequency counts in one SQLite file that every server process on the machine shares.

Why a file: a user's app holds one connection, and with several server processes
(``serving.processes``) the kernel hands connections, not users, to processes — counts
kept in a process would let a cap of 3 a day serve 3 × N. WAL mode lets the processes
read while one writes; ``synchronous=NORMAL`` skips the per-commit fsync (a crash may
lose the last moments of counts, never corrupt the file); ``secure_delete`` zeroes what
an erasure removes. A request costs one indexed
read of its user's rows and, when ads were served, one small write transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from serving._caps import WEEK_DAYS, StoreReads
from serving.errors import Unavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frequency (
    user TEXT NOT NULL, campaign TEXT NOT NULL, day INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (user, campaign, day)
) WITHOUT ROWID
"""


class SqliteFrequencyStore(StoreReads):
    """``FrequencyStore`` on a SQLite file (profile ``local``); thread-safe, multi-process safe."""

    kind = "sqlite"

    def __init__(self, path: Path | str, *, prune_every_s: float = 3600.0, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")      # an erased user's pseudonym leaves no freed page
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"cannot open the frequency-cap store {self.path}: {exc}; check that its directory "
                              "is writable (serving.frequency_store, data_dir)") from exc
        self._lock = threading.Lock()
        self._prune_every_s = prune_every_s
        self._pruned_at = 0.0

    def record_many(self, user: str, campaign_ids: Sequence[str], day: int) -> None:
        if not campaign_ids:
            return
        rows = [(user, cid, day) for cid in campaign_ids]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO frequency (user, campaign, day, n) VALUES (?, ?, ?, 1) "
                                     "ON CONFLICT (user, campaign, day) DO UPDATE SET n = n + 1", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise Unavailable(f"frequency-cap store {self.path} refused a write: {exc}") from exc
            now = time.monotonic()
            if now - self._pruned_at > self._prune_every_s:
                self._pruned_at = now
                self._db.execute("DELETE FROM frequency WHERE day <= ?", (day - WEEK_DAYS,))

    def erase_user(self, user: str) -> int:
        """Forget a user's counters; returns how many campaign entries were removed."""
        with self._lock:
            try:
                n = self._db.execute("SELECT COUNT(DISTINCT campaign) FROM frequency WHERE user = ?", (user,)).fetchone()[0]
                self._db.execute("DELETE FROM frequency WHERE user = ?", (user,))
            except sqlite3.Error as exc:
                raise Unavailable(f"frequency-cap store {self.path} refused an erasure: {exc}; retry it") from exc
            return int(n)

    def users(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(DISTINCT user) FROM frequency").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, user: str, day: int) -> dict[str, dict[int, int]]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT campaign, day, n FROM frequency WHERE user = ? AND day > ?",
                                        (user, day - WEEK_DAYS)).fetchall()
            except sqlite3.Error as exc:
                raise Unavailable(f"frequency-cap store {self.path} cannot be read: {exc}") from exc
        out: dict[str, dict[int, int]] = {}
        for campaign, d, n in rows:
            if d <= day:
                out.setdefault(campaign, {})[d] = n
        return out

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
