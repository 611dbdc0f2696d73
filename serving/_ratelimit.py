"""Per-key rate limiting: a token bucket per API key (pure core; the caller passes time).

``RateLimiter`` keeps the buckets in the process. ``SharedRateLimiter`` keeps them in a
file every server process of one machine maps (``ServerGroup`` creates it), so a key's
limit holds for the machine however the kernel spreads its connections.
``RedisRateLimiter`` keeps them in Redis (profile ``prod``), so it holds for every server
behind the load balancer.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


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

    ``share``: the part of every key's rate and burst this process grants — ``1/N`` for N
    server processes without a shared bucket file (``SharedRateLimiter``), so a key's limit
    holds for the machine; an app with one connection then reaches one process and gets
    1/N of its limit."""

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


_MAGIC = b"SLRL0001"
_HEADER = struct.Struct("<8sQ")            # magic, slots
_SLOT = struct.Struct("<Qdd")              # key tag (0: free), tokens, last refill
SHARED_SLOTS = 16_384
"""Keys one bucket file holds (~400 KB); keys beyond it fall back to an in-process 1/N share."""


def create_bucket_file(path: Path, slots: int = SHARED_SLOTS, *, exist_ok: bool = False) -> Path:
    """Create (or reset) the bucket file the processes of a ``ServerGroup`` share. With
    ``exist_ok`` an existing file is left as it is (servers started apart that name the same
    file: the first one creates it)."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exist_ok else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "wb") as f:
        f.write(_HEADER.pack(_MAGIC, slots))
        f.truncate(_HEADER.size + slots * _SLOT.size)
    return path


class SharedRateLimiter:
    """``RateLimiter`` over token buckets in a file mapped by every server process of one
    machine: one bucket per key for all of them, so an app on one connection gets its whole
    limit and an app on many gets no more than it.

    Each ``allow`` takes an exclusive ``flock`` on the file (and a thread lock: flock does
    not exclude threads sharing the descriptor), reads the key's bucket, spends and writes it
    back: a few µs. Buckets live in an open-addressing table keyed by a 64-bit hash of the key
    id; slots are never freed, and a key that finds the table full is limited in-process at
    ``fallback_share`` of its rate. The clock must be one every process shares
    (``time.monotonic`` is, on Linux)."""

    def __init__(self, path: Path, default_rate: float, default_burst: float, *, fallback_share: float = 1.0) -> None:
        self._default = (default_rate, default_burst)
        self._fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(self._fd).st_size
            self._map = mmap.mmap(self._fd, size)
            magic, slots = _HEADER.unpack_from(self._map, 0)
        except (OSError, ValueError, struct.error) as exc:
            os.close(self._fd)
            raise ValueError(f"{path} is not a rate-limit bucket file ({exc}); create it with create_bucket_file") from exc
        if magic != _MAGIC or size < _HEADER.size + slots * _SLOT.size:
            self._map.close()
            os.close(self._fd)
            raise ValueError(f"{path} is not a rate-limit bucket file; create it with create_bucket_file")
        self._slots = slots
        self._where: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._fallback = RateLimiter(default_rate, default_burst, share=fallback_share)

    @staticmethod
    def _tag(key_id: str) -> int:
        return int.from_bytes(hashlib.blake2b(key_id.encode(), digest_size=8).digest(), "little") or 1

    def _find(self, key_id: str, tag: int) -> int | None:
        """The key's slot offset (claimed if new); None when the table is full. Under the locks."""
        start = tag % self._slots
        for i in range(self._slots):
            off = _HEADER.size + ((start + i) % self._slots) * _SLOT.size
            found = _SLOT.unpack_from(self._map, off)[0]
            if found == tag:
                return off
            if found == 0:
                _SLOT.pack_into(self._map, off, tag, -1.0, 0.0)      # tokens -1: a full bucket on first use
                return off
        return None

    def allow(self, key_id: str, now: float, rate: float | None = None, burst: float | None = None) -> tuple[bool, float]:
        """(allowed, retry_after_s) for one request of ``key_id`` at time ``now``."""
        rate, burst = rate or self._default[0], burst or self._default[1]
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                off = self._where.get(key_id, -1)
                if off == -1:
                    off = self._where[key_id] = self._find(key_id, self._tag(key_id))
                if off is None:
                    return self._fallback.allow(key_id, now, rate, burst)
                tag, tokens, updated = _SLOT.unpack_from(self._map, off)
                fresh = tokens < 0
                bucket = TokenBucket(rate, max(1.0, burst), tokens=-1.0 if fresh else min(tokens, max(1.0, burst)),
                                     updated=None if fresh else updated)
                ok = bucket.take(now)
                _SLOT.pack_into(self._map, off, tag, bucket.tokens, bucket.updated)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return ok, (0.0 if ok else bucket.retry_after())

    def close(self) -> None:
        with self._lock:
            if not self._map.closed:
                self._map.close()
                os.close(self._fd)



# One token bucket in a Redis hash, spent atomically: the time is Redis's own (servers'
# clocks may differ), and an idle key expires once its bucket would be full again.
_REDIS_BUCKET = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
if now > ts then tokens, ts = math.min(burst, tokens + (now - ts) * rate), now end
tokens = math.min(tokens, burst)
local ok, retry = 0, 0
if tokens >= 1 then tokens, ok = tokens - 1, 1 else retry = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 60) * 1000))
return {ok, tostring(retry)}
"""


class RedisRateLimiter:
    """``RateLimiter`` over token buckets in Redis (profile ``prod``, the Redis of Feast's online
    store and the frequency caps): one bucket per key for every server behind the load balancer.

    Each ``allow`` is one round trip (a Lua script spends the bucket atomically, on Redis's
    clock, so ``now`` is not used). If Redis fails, the call is decided by the in-process
    ``fallback`` (1/N of every key's limit, as before) and Redis is skipped for ``breaker_s``:
    an outage of the limiter does not stop serving, and a request does not wait on it."""

    def __init__(self, url: str, default_rate: float, default_burst: float, *, prefix: str = "sightline",
                 fallback_share: float = 1.0, timeout_s: float = 0.05, breaker_s: float = 1.0) -> None:
        from serving._caps_redis import request_path_client

        self.url = url
        self._default = (default_rate, default_burst)
        self._client, self._errors = request_path_client(url, timeout_s)
        self._script = self._client.register_script(_REDIS_BUCKET)
        self._prefix = f"{prefix}:ratelimit:"
        self._fallback = RateLimiter(default_rate, default_burst, share=fallback_share)
        self._breaker_s = breaker_s
        self._down_until = 0.0
        self.failures = 0

    def allow(self, key_id: str, now: float, rate: float | None = None, burst: float | None = None) -> tuple[bool, float]:
        """(allowed, retry_after_s) for one request of ``key_id``."""
        rate, burst = rate or self._default[0], max(1.0, burst or self._default[1])
        if time.monotonic() >= self._down_until:
            try:
                ok, retry = self._script(keys=[self._prefix + key_id], args=[repr(float(rate)), repr(float(burst))])
                return bool(ok), float(retry)
            except self._errors as exc:
                self.failures += 1
                self._down_until = time.monotonic() + self._breaker_s
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("rate limits at redis %s failed (%s); limiting in the process for %.1f s "
                                "[%d failures so far]", self.url, exc, self._breaker_s, self.failures)
        return self._fallback.allow(key_id, now, rate, burst)

    def close(self) -> None:
        self._client.close()


def rate_limiter(settings):
    """The API-key limiter the settings name (``serving.rate_limit_store``, profile default)."""
    from serving.errors import ServerConfigError

    cfg = settings.serving
    kind = settings.rate_limit_store_kind
    if kind == "redis":                    # one bucket per key for every server
        return RedisRateLimiter(settings.feast.redis_url, cfg.rate_limit_rps, cfg.rate_limit_burst,
                                prefix=settings.kafka.topic_prefix, fallback_share=1.0 / cfg.processes)
    if kind == "file":                   # one bucket per key for every process of the machine
        if cfg.rate_limit_file is None:
            raise ServerConfigError("serving.rate_limit_store = file needs serving.rate_limit_file (a path); "
                                    "set it, or use memory or redis")
        try:
            return SharedRateLimiter(create_bucket_file(cfg.rate_limit_file, exist_ok=True), cfg.rate_limit_rps,
                                     cfg.rate_limit_burst, fallback_share=1.0 / cfg.processes)
        except (OSError, ValueError) as exc:
            raise ServerConfigError(f"serving.rate_limit_file {cfg.rate_limit_file}: {exc}; point it at a "
                                    "writable path of its own, or leave it unset") from exc
    return RateLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst, share=1.0 / cfg.processes)

