"""Frequency caps per user and campaign: at most N impressions a (UTC) day and M in any
rolling 7 days. Pure counting over plain data; the caller passes the day number.

Counts are keyed by the pseudonymized user id and kept only for requests with
personalization consent (nothing user-keyed is stored otherwise). ``erase_user`` supports
the privacy erasure path.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class FrequencyCounter:
    """Impressions per (user, campaign, day), the last 7 days kept. Thread-safe."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
        self._lock = threading.Lock()

    def counts(self, user: str, campaign_id: str, day: int) -> tuple[int, int]:
        """(impressions today, impressions in the 7 days ending today)."""
        with self._lock:
            by_day = self._counts.get(user, {}).get(campaign_id, {})
            return by_day.get(day, 0), sum(n for d, n in by_day.items() if day - 6 <= d <= day)

    def allowed(self, user: str, campaign_id: str, day: int, per_day: int | None, per_week: int | None) -> bool:
        if per_day is None and per_week is None:
            return True
        today, week = self.counts(user, campaign_id, day)
        return (per_day is None or today < per_day) and (per_week is None or week < per_week)

    def allowed_many(self, user: str, asks, day: int) -> list[bool]:
        """``allowed`` for each ``(campaign_id, per_day, per_week)`` of one request, under one lock."""
        out = []
        with self._lock:
            by_campaign = self._counts.get(user, {})
            for campaign_id, per_day, per_week in asks:
                if per_day is None and per_week is None:
                    out.append(True)
                    continue
                by_day = by_campaign.get(campaign_id, {})
                today, week = by_day.get(day, 0), sum(n for d, n in by_day.items() if day - 6 <= d <= day)
                out.append((per_day is None or today < per_day) and (per_week is None or week < per_week))
        return out

    def record(self, user: str, campaign_id: str, day: int, n: int = 1) -> None:
        with self._lock:
            by_day = self._counts[user][campaign_id]
            by_day[day] = by_day.get(day, 0) + n
            for old in [d for d in by_day if d < day - 6]:
                del by_day[old]

    def erase_user(self, user: str) -> int:
        """Forget a user's counters; returns how many campaign entries were removed."""
        with self._lock:
            return len(self._counts.pop(user, {}))

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)
