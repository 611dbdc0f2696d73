"""Frequency caps per user and campaign: at most N impressions a (UTC) day and M in any
rolling 7 days.

The decision is a pure function over one user's counts (``cap_allows``); where the counts
live is a ``serving.types.FrequencyStore``: this module's ``FrequencyCounter`` keeps them
in the process (tests, one-off tools), ``SqliteFrequencyStore`` in a file every server
process on the machine shares (profile ``local``), ``RedisFrequencyStore`` in the Redis
every server behind the load balancer shares (profile ``prod``). Counts are keyed by the
pseudonymized user id and kept only for requests with personalization consent (nothing
user-keyed is stored otherwise); ``erase_user`` serves the privacy erasure path.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

WEEK_DAYS = 7
"""The rolling window of the weekly cap, in UTC days (today and the six before)."""

CapAsk = tuple[str, "int | None", "int | None"]
"""``(campaign_id, per_day, per_week)``: one ad's caps (``None`` = no cap)."""


def is_capped(per_day: int | None, per_week: int | None) -> bool:
    """Whether an ad has any frequency cap (only those need counts read or written)."""
    return per_day is not None or per_week is not None


def cap_allows(by_day: Mapping[int, int], day: int, per_day: int | None, per_week: int | None) -> bool:
    """Whether one more impression stays within the caps, given the impressions per day."""
    if not is_capped(per_day, per_week):
        return True
    if per_day is not None and by_day.get(day, 0) >= per_day:
        return False
    if per_week is not None:
        week = sum(n for d, n in by_day.items() if day - WEEK_DAYS < d <= day)
        if week >= per_week:
            return False
    return True


def allowed_from_counts(counts: Mapping[str, Mapping[int, int]], asks: Iterable[CapAsk], day: int) -> list[bool]:
    """``cap_allows`` for each ask, given one user's counts per campaign and day."""
    empty: dict[int, int] = {}
    return [cap_allows(counts.get(cid, empty), day, per_day, per_week) for cid, per_day, per_week in asks]


def needs_counts(asks: Sequence[CapAsk]) -> bool:
    """Whether any ask has a cap at all (a store read can be skipped otherwise)."""
    return any(is_capped(per_day, per_week) for _, per_day, per_week in asks)


class StoreReads:
    """``counts`` and ``allowed_many`` for a store that reads one user's counts at a time
    through ``_read(user, day) -> {campaign: {day: n}}`` (the 7 days ending ``day``)."""

    def _read(self, user: str, day: int) -> dict[str, dict[int, int]]:
        raise NotImplementedError(f"{type(self).__name__} must implement _read(user, day)")

    def counts(self, user: str, campaign_id: str, day: int) -> tuple[int, int]:
        """(impressions today, impressions in the 7 days ending today)."""
        by_day = self._read(user, day).get(campaign_id, {})
        return by_day.get(day, 0), sum(by_day.values())

    def allowed_many(self, user: str, asks: Sequence[CapAsk], day: int) -> list[bool]:
        """``cap_allows`` for each ask; no read at all when none of the ads is capped."""
        if not needs_counts(asks):
            return [True] * len(asks)
        return allowed_from_counts(self._read(user, day), asks, day)


class FrequencyCounter:
    """Impressions per (user, campaign, day) in this process, the last 7 days kept. Thread-safe.

    Lost on restart and not shared between processes: the stores in ``_caps_sqlite`` and
    ``_caps_redis`` are for servers; this one is for tests and single-process tools."""

    kind = "memory"

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
        self._lock = threading.Lock()

    def counts(self, user: str, campaign_id: str, day: int) -> tuple[int, int]:
        """(impressions today, impressions in the 7 days ending today)."""
        with self._lock:
            by_day = self._counts.get(user, {}).get(campaign_id, {})
            return by_day.get(day, 0), sum(n for d, n in by_day.items() if day - WEEK_DAYS < d <= day)

    def allowed_many(self, user: str, asks: Sequence[CapAsk], day: int) -> list[bool]:
        """``cap_allows`` for each ``(campaign_id, per_day, per_week)`` of one request, under one lock."""
        with self._lock:
            return allowed_from_counts(self._counts.get(user, {}), asks, day)

    def record_many(self, user: str, campaign_ids: Sequence[str], day: int) -> None:
        """One impression per entry of ``campaign_ids`` (a reply's served ads) today."""
        if not campaign_ids:
            return
        with self._lock:
            by_campaign = self._counts[user]
            for campaign_id in campaign_ids:
                by_day = by_campaign[campaign_id]
                by_day[day] = by_day.get(day, 0) + 1
                for old in [d for d in by_day if d <= day - WEEK_DAYS]:
                    del by_day[old]

    def erase_user(self, user: str) -> int:
        """Forget a user's counters; returns how many campaign entries were removed."""
        with self._lock:
            return len(self._counts.pop(user, {}))

    def users(self) -> int:
        with self._lock:
            return len(self._counts)

    __len__ = users

    def close(self) -> None:
        pass


def frequency_store(settings):
    """The ``FrequencyStore`` the settings name (``serving.frequency_store``, profile default)."""
    kind = settings.frequency_store_kind
    if kind == "memory":
        return FrequencyCounter()
    if kind == "sqlite":
        from serving._caps_sqlite import SqliteFrequencyStore

        return SqliteFrequencyStore(settings.frequency_store_path)
    from serving._caps_redis import RedisFrequencyStore

    return RedisFrequencyStore(settings.feast.redis_url, prefix=settings.kafka.topic_prefix)
