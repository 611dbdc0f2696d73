"""Per-key rate limiting: a token bucket per API key (pure core; the caller passes time).

``RateLimiter`` keeps the buckets in the process. ``SharedRateLimiter`` keeps them in a
file every server process of one machine maps (``ServerGroup`` creates it), so a key's
limit holds for the machine however the kernel spreads its connections.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path


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

