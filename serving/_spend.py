"""Keeps every server process's pacing in the campaign store, so the processes pace each
budget together and a restart does not spend a day's budget twice.

Pacing runs in each process's memory (``PacingBook``). Every ``flush_s`` a thread of the
process
- adds what the process charged since the last flush to the store's spend ledger
  (``CampaignStore.add_spend``: increments, so any number of processes and servers add to
  the same totals);
- reads back today's totals and hands them to the book (``PacingBook.sync``);
- every ``levels_every`` flushes (5 s), also writes its own levels (cost issued today, CPC
  cost still waiting for clicks, the spend-rate estimate) as rows of its own
  (``CampaignStore.put_pacing``, keyed by writer) and reads the other writers' back, summed
  by the store (``CampaignStore.pacing_totals``): they
  steer the controller, which moves every 5 minutes, and the CPC reserve, a 10-minute
  window, so seconds do not matter there (a flush with ~1,000 campaigns' levels costs
  ~17 ms of CPU on SQLite, one with their spend alone ~5 ms).
A process starting does the read before it serves (``restore``); one stopping folds its
rows into one row per campaign kept for the stopped writers (``stop``), so a day of restarts
does not leave every reader more rows to sum. The rows of one that crashed are folded by the
next ledger on its node (``fold_gone``: at ``restore`` and every 5 minutes).

Before this, N processes each paced 1/N of every budget: an app on one connection reaches
one process, so its campaigns could spend half their budget at most with two processes.
Between flushes each process sees the others' spend up to ``flush_s`` late; at the
budget's end that lets the others overspend by what they charge in ``flush_s`` (1 s by
default), against the 2 % allowance of a day's budget. A crash loses the charges of its
last ``flush_s``; the clicks still due on its CPC impressions stay reserved for the click
window through its last levels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from serving._pacing import DAY_S

log = logging.getLogger(__name__)


def _node() -> str:
    """Who can see this process's pid: the host, its boot and the pid namespace, as 8 hex
    digits (the host name alone is shared by replicas whose names differ only past their
    first 24 characters, and by containers with the host's network but pids of their own)."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("?")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8]


def writer_id() -> str:
    """Unique per process start: host, node (``_node``), pid and a random part (a pid is
    reused after a restart)."""
    return f"{socket.gethostname()[:24]}-{_node()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def writer_is_gone(writer: str, node: str | None = None) -> bool:
    """True only when ``writer``'s process has certainly exited: it ran on this node
    (``_node``) and its pid is free. A pid in use again, another node's writer, or an id of
    another shape is taken as alive: folding a live writer's rows would count its cost twice,
    leaving a dead one's only costs the readers a few rows more."""
    try:
        _, writer_node, pid, _ = writer.rsplit("-", 3)
        pid = int(pid)
    except ValueError:
        return False
    if writer_node != (node or _node()) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:       # PermissionError: the pid is in use, by someone else
        return False
    return False


class SpendLedger:
    """``restore`` once before serving, then ``start``; ``stop`` flushes what is left."""

    def __init__(self, book, store, *, flush_s: float = 1.0, clock: Callable[[], float] = time.time,
                 writer: str | None = None, levels_every: int = 5, fold_every_s: float = 300.0) -> None:
        if flush_s <= 0:
            raise ValueError(f"flush_s must be positive, got {flush_s}; use e.g. 1.0")
        if levels_every < 1:
            raise ValueError(f"levels_every must be at least 1, got {levels_every}")
        if fold_every_s <= 0:
            raise ValueError(f"fold_every_s must be positive, got {fold_every_s}; use e.g. 300")
        self._book, self._store, self.flush_s, self._clock = book, store, flush_s, clock
        self.levels_every = levels_every
        self.fold_every_s = fold_every_s
        self._fold_due = clock() + fold_every_s
        self._count = 0
        self.writer = writer or writer_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0
        self.failures = 0
        self._retired = False

    def restore(self) -> dict[str, float]:
        """Today's spend so far by campaign (every server's), given to the book with the other
        writers' levels; first the rows of this node's crashed writers are folded."""
        try:
            self.fold_gone()
        except Exception as exc:  # noqa: BLE001 - the rows stay and still count; the read below tells if the store is down
            log.warning("could not fold the rows of exited server processes (%s); the flush thread tries again", exc)
        spent = self._read(self._clock())
        if spent:
            log.info("pacing resumes today's spend of %d campaigns (%.2f in all)", len(spent), sum(spent.values()))
        return spent

    def fold_gone(self) -> int:
        """Fold the rows of today's writers whose process has exited without folding its own
        (killed, crashed: ``writer_is_gone``) as ``stop`` would have; returns the rows folded.
        Run by ``restore`` and every ``fold_every_s`` by the flush thread, so a crash loop
        leaves no pile of rows for the readers. Only this node's writers can be told dead;
        another node's wait for a process of their own node to start."""
        day = int(self._clock() // DAY_S)
        node = _node()
        folded = 0
        for writer in self._store.pacing_writers(day):
            if writer != self.writer and writer_is_gone(writer, node):
                rows = self._store.retire_pacing(day, writer)
                if rows:
                    log.info("folded %d pacing rows of %s, a server process that exited without folding them",
                             rows, writer)
                folded += rows
        return folded

    def _read(self, now: float, levels: bool = True) -> dict[str, float]:
        day = int(now // DAY_S)
        spent = self._store.spend_on(day)
        others = (self._store.pacing_totals(day, exclude_writer=self.writer,
                                            fresh_after=now - self._book.click_window_s) if levels else None)
        self._book.sync(day, spent, others)
        return spent

    def flush(self, *, levels: bool | None = None) -> bool:
        """Store what was charged since the last flush (and, every ``levels_every`` flushes or
        with ``levels=True``, the levels that changed), then read every writer's totals back;
        what could not be stored is kept for the next flush."""
        from campaigns import PacingLevels

        now = self._clock()
        day = int(now // DAY_S)
        if levels is None:
            levels = self._count % self.levels_every == 0
        self._count += 1
        ok = True
        charges = self._book.take_charges()
        try:
            for d, by_campaign in charges.items():
                self._store.add_spend(d, by_campaign)
        except Exception as exc:  # noqa: BLE001 - the store may be down; pacing goes on in memory
            self._book.give_back(charges)
            ok = False
            self._warn("could not store pacing spend (%s); kept for the next flush", exc)
        # a folded writer writes no levels again: its issued cost is already in the folded row
        changed = self._book.levels(day, now) if levels and not self._retired else {}
        if ok and changed:
            try:
                self._store.put_pacing(day, self.writer, {cid: PacingLevels(*lv) for cid, lv in changed.items()})
            except Exception as exc:  # noqa: BLE001 - as above
                self._book.touch(day, changed)
                ok = False
                self._warn("could not store pacing levels (%s); kept for the next flush", exc)
        elif changed:
            self._book.touch(day, changed)
        if ok:
            try:
                self._read(now, levels)
            except Exception as exc:  # noqa: BLE001 - as above; the book keeps the last totals
                ok = False
                self._warn("could not read the other servers' pacing (%s); using the last totals", exc)
        if ok and now >= self._fold_due and not self._retired:
            self._fold_due = now + self.fold_every_s
            try:
                self.fold_gone()
            except Exception as exc:  # noqa: BLE001 - the rows stay and still count; only their number grows
                log.warning("could not fold the rows of exited server processes (%s); trying again in %.0f s",
                            exc, self.fold_every_s)
        if ok:
            self.flushes += 1
        else:
            self.failures += 1
        return ok

    def _warn(self, message: str, exc: Exception) -> None:
        """On the first failed flush, then every 60th (a flush a second would flood the log)."""
        if self.failures % 60 == 0:
            log.warning(message + " [%d failed flushes so far]", exc, self.failures + 1)

    def start(self) -> "SpendLedger":
        if self._thread is None:
            self._stop.clear()
            # processes started together would flush, and write their levels, in the same
            # instant: every 5 s both would pause their requests at once
            self._count = random.randrange(self.levels_every)
            self._thread = threading.Thread(target=self._run, name="serving-spend-ledger", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        if self._stop.wait(self.flush_s * random.random()):
            return
        while not self._stop.wait(self.flush_s):
            self.flush()

    def stop(self) -> None:
        """The last flush, then this writer's rows are folded into the stopped writers' row
        (``CampaignStore.retire_pacing``), so restarts do not pile up rows for the readers."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
        if not self.flush(levels=True):
            return                      # what could not be stored stays: the rows are still right
        try:
            self._store.retire_pacing(int(self._clock() // DAY_S), self.writer)
            self._retired = True
        except Exception as exc:  # noqa: BLE001 - the rows stay and still count; only their number grows
            log.warning("could not fold this process's pacing rows (%s); they stay as they are", exc)
