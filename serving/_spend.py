"""Keeps the pacing book's charges in the campaign store, so a restart does not spend a
day's budget twice.

Pacing runs in each server process's memory (``PacingBook``). Restarted mid-day (a deploy,
a crash), a process used to start the day again from nothing spent: a campaign at 90 % of
its budget could end near 190 %. Now every ``flush_s`` a thread adds what the process charged
since the last flush to the store's spend ledger (``CampaignStore.add_spend``: increments,
so the processes of a group and every server behind a load balancer add to the same
totals), and a process starting takes its share of today's total (``PacingBook.restore``).

What a crash can lose: the charges of its last ``flush_s`` (1 s by default), and the
expected cost of CPC impressions still waiting for their click (at most the click window,
10 min, of CPC spend), which the restarted book does not reserve.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from serving._pacing import DAY_S

log = logging.getLogger(__name__)


class SpendLedger:
    """``restore`` once before serving, then ``start``; ``stop`` flushes what is left."""

    def __init__(self, book, store, *, flush_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        if flush_s <= 0:
            raise ValueError(f"flush_s must be positive, got {flush_s}; use e.g. 1.0")
        self._book, self._store, self.flush_s, self._clock = book, store, flush_s, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0
        self.failures = 0

    def restore(self) -> dict[str, float]:
        """Today's spend so far by campaign (every server's), given to the book."""
        day = int(self._clock() // DAY_S)
        spent = self._store.spend_on(day)
        self._book.restore(day, spent)
        if spent:
            log.info("pacing resumes today's spend of %d campaigns (%.2f in all)", len(spent), sum(spent.values()))
        return spent

    def flush(self) -> bool:
        """Store what was charged since the last flush; on failure keep it for the next one."""
        charges = self._book.take_charges()
        if not charges:
            return True
        try:
            for day, by_campaign in charges.items():
                self._store.add_spend(day, by_campaign)
        except Exception as exc:  # noqa: BLE001 - the store may be down; pacing goes on in memory
            self._book.give_back(charges)
            self.failures += 1
            log.warning("could not store pacing spend (%s); kept for the next flush", exc)
            return False
        self.flushes += 1
        return True

    def start(self) -> "SpendLedger":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="serving-spend-ledger", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
