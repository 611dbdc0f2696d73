"""Frequency counts in Redis, shared by every server behind the load balancer (profile ``prod``).

One hash per pseudonymized user (``<prefix>:freq:<user>``), a field per campaign and
UTC day. Every write refreshes the key's expiry to 8 days, so an inactive user's counts
disappear by themselves; stale days of an active user are dropped when they are read.
The same Redis holds Feast's online store (``feast.redis_url``): the delivery counters
live where the architecture puts them, next to the features.
"""

from __future__ import annotations

import time
from typing import Sequence

from serving._caps import WEEK_DAYS, StoreReads
from serving.errors import Unavailable

_SEP = "\x1f"


def request_path_client(url: str, timeout_s: float, *, decode_responses: bool = False):
    """(a redis-py client for ``host:port``, the errors it raises) for calls a request waits on:
    short timeouts and no retries with backoff (redis-py's default waits seconds); its users
    skip Redis for a while after a failure and degrade instead."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, _, port = url.removeprefix("redis://").partition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=timeout_s,
                         socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
                         decode_responses=decode_responses)
    return client, (redis.RedisError, OSError)
_TTL_S = (WEEK_DAYS + 1) * 86_400


class RedisFrequencyStore(StoreReads):
    """``FrequencyStore`` on Redis; redis-py's pool makes it thread-safe."""

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "sightline", timeout_s: float = 0.05,
                 breaker_s: float = 1.0) -> None:
        self.url = url
        self._client, self._errors = request_path_client(url, timeout_s, decode_responses=True)
        self._prefix = f"{prefix}:freq:"
        self._breaker_s = breaker_s
        self._down_until = 0.0

    def _call(self, what: str, fn, *args):
        now = time.monotonic()
        if now < self._down_until:
            raise Unavailable(f"frequency-cap store at redis {self.url} is down (retrying after "
                              f"{self._down_until - now:.1f} s)")
        try:
            return fn(*args)
        except self._errors as exc:
            self._down_until = time.monotonic() + self._breaker_s
            raise Unavailable(f"frequency-cap store at redis {self.url} {what}: {exc}") from exc

    def record_many(self, user: str, campaign_ids: Sequence[str], day: int) -> None:
        if not campaign_ids:
            return
        key = self._prefix + user
        pipe = self._client.pipeline(transaction=False)
        for cid in campaign_ids:
            pipe.hincrby(key, f"{cid}{_SEP}{day}", 1)
        pipe.expire(key, _TTL_S)
        self._call("refused a write", pipe.execute)

    def erase_user(self, user: str) -> int:
        """Forget a user's counters; returns how many campaign entries were removed."""
        key = self._prefix + user
        try:
            fields = self._client.hkeys(key)
            self._client.delete(key)
        except self._errors as exc:
            raise Unavailable(f"frequency-cap store at redis {self.url} refused an erasure: {exc}; retry it") from exc
        return len({f.split(_SEP, 1)[0] for f in fields})

    def users(self) -> int:
        try:
            return sum(1 for _ in self._client.scan_iter(match=self._prefix + "*", count=1000))
        except self._errors as exc:
            raise Unavailable(f"frequency-cap store at redis {self.url} cannot be read: {exc}") from exc

    def close(self) -> None:
        self._client.close()

    def _read(self, user: str, day: int) -> dict[str, dict[int, int]]:
        key = self._prefix + user
        raw = self._call("cannot be read", self._client.hgetall, key)
        out: dict[str, dict[int, int]] = {}
        stale = []
        for field, n in raw.items():
            cid, _, d = field.rpartition(_SEP)
            d = int(d)
            if d <= day - WEEK_DAYS:
                stale.append(field)
            elif d <= day:
                out.setdefault(cid, {})[d] = int(n)
        if stale:
            try:
                self._client.hdel(key, *stale)
            except self._errors:
                pass   # dropped on the next read; the counts above already ignore them
        return out
