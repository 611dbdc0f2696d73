"""Per-key rate limiting: a token bucket per API key (pure core; the caller passes time)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """Allows ``rate`` requests per second on average and bursts of up to ``burst``.

    Pure: ``take(now)`` is given the clock, so tests drive it without sleeping.
    """

    rate: float
    """Tokens added per second."""
    burst: float
    """Bucket size: the most requests allowed back to back."""
    tokens: float = field(default=-1.0)
    """Tokens available now; starts full."""
    updated: float | None = None
    """Time of the last refill (seconds, any monotonic clock)."""

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available; False means the request is over the limit."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now if self.updated is None else max(now, self.updated)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (for the error message)."""
        return max(0.0, (cost - self.tokens) / self.rate)


class RateLimiter:
    """Token buckets by key id, created on first use; thread-safe (one lock, O(1) work).

    ``share``: the part of every key's rate and burst this process grants — ``1/N`` when N
    server processes share the port, so a key's limit holds for the machine, not per process
    (the kernel spreads connections, so an app with one connection sees one process's share;
    its limit is then 1/N of the configured one: spread calls over several connections)."""

    def __init__(self, default_rate: float, default_burst: float, *, share: float = 1.0) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._default = (default_rate, default_burst)
        self._share = share
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str, now: float, rate: float | None = None, burst: float | None = None) -> tuple[bool, float]:
        """(allowed, retry_after_s) for one request of ``key_id`` at time ``now``."""
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = TokenBucket((rate or self._default[0]) * self._share,
                                     max(1.0, (burst or self._default[1]) * self._share))
                self._buckets[key_id] = bucket
            ok = bucket.take(now)
            return ok, (0.0 if ok else bucket.retry_after())
