"""Tombstones: the durable set of erased pseudonymous user ids, fast to read.

Erasure records the tombstone *before* deleting, so an event that races the deletion
is dropped by the consumer instead of re-creating the user. Ingestion checks every
event: ``Tombstones(settings).drops(uid, event_time_ms)`` is a dict lookup; the file is
re-read only when its size or mtime changed, at most every ``refresh_s`` seconds.

Format: ``<data_dir>/privacy/tombstones.tsv``, one ``<pseudonymous id>\t<erased_at_ms>``
line per erasure, appended under an exclusive ``flock`` and fsynced, so several
processes (CLI, server, ingest workers) share it safely. An event whose time is after
the erasure (the user came back and consented again) is *not* dropped; the tombstone
only stops events produced before the erasure. ``prune`` forgets tombstones older than
the longest time a late event can still arrive (Kafka retention).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping


def tombstone_path(data_dir: Path) -> Path:
    return Path(data_dir) / "privacy" / "tombstones.tsv"


class Tombstones:
    """Erased pseudonymous ids with their erasure time (epoch ms). Thread-safe."""

    def __init__(self, settings=None, *, path: Path | None = None, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if path is None:
            if settings is None:
                raise ValueError("Tombstones needs settings or a path")
            path = tombstone_path(settings.data_dir)
        self.path = Path(path)
        self._refresh_s = refresh_s
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------
    def _maybe_reload(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._checked < self._refresh_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._ids, self._stamp = {}, None
            return
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and not force:
            return
        ids: dict[str, int] = {}
        with open(self.path, "r", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                for line in fh:
                    uid, _, ts = line.rstrip("\n").partition("\t")
                    if uid and ts.isdigit():
                        ids[uid] = max(ids.get(uid, 0), int(ts))
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self._ids, self._stamp = ids, stamp

    def erased_at(self, uid: str) -> int | None:
        """Epoch ms of the user's (latest) erasure, or None."""
        with self._lock:
            self._maybe_reload()
            return self._ids.get(uid)

    def contains(self, uid: str) -> bool:
        """True if the pseudonymous id was ever erased (within the tombstone horizon)."""
        return self.erased_at(uid) is not None

    __contains__ = contains

    def drops(self, uid: str, event_time_ms: int) -> bool:
        """Should an event of ``uid`` at ``event_time_ms`` be dropped? (produced at or before its erasure)"""
        at = self.erased_at(uid)
        return at is not None and event_time_ms <= at

    def current(self) -> Mapping[str, int]:
        """The tombstones as of the last reload (at most ``refresh_s`` old), read only and not
        copied: for a batch's worth of ``drops`` checks without a lock and clock read per event."""
        with self._lock:
            self._maybe_reload()
            return MappingProxyType(self._ids)   # replaced on reload, never changed in place

    def snapshot(self) -> dict[str, int]:
        """Every tombstone (id → erased_at_ms), re-read now."""
        with self._lock:
            self._maybe_reload(force=True)
            return dict(self._ids)

    def __len__(self) -> int:
        return len(self.snapshot())

    # -- writing ---------------------------------------------------------------------
    def add(self, uids: Iterable[str], erased_at_ms: int | None = None) -> int:
        """Record erasure of ``uids`` durably (fsync); returns the erasure time in epoch ms."""
        at = int(time.time() * 1000) if erased_at_ms is None else int(erased_at_ms)
        lines = "".join(f"{u}\t{at}\n" for u in uids if u and "\t" not in u and "\n" not in u)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            with open(self.path, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    if os.fstat(fh.fileno()).st_ino != _inode(self.path):
                        continue  # a concurrent prune replaced the file; append to the new one
                    fh.write(lines)
                    fh.flush()
                    os.fsync(fh.fileno())
                    break
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        with self._lock:
            self._maybe_reload(force=True)
        return at

    def prune(self, older_than_ms: int) -> int:
        """Forget tombstones whose erasure is before ``older_than_ms``; returns how many."""
        if not self.path.exists():
            return 0
        with open(self.path, "r+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                latest: dict[str, int] = {}
                for line in fh:
                    uid, _, ts = line.rstrip("\n").partition("\t")
                    if uid and ts.isdigit():
                        latest[uid] = max(latest.get(uid, 0), int(ts))
                keep = {u: t for u, t in latest.items() if t >= older_than_ms}
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(f"{u}\t{t}\n" for u, t in keep.items()), encoding="utf-8")
                with open(tmp, "rb") as t:
                    os.fsync(t.fileno())
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        with self._lock:
            self._maybe_reload(force=True)
        return len(latest) - len(keep)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
