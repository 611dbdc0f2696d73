"""API keys per app, marketer and analyst, stored hashed in the campaign database.

A key reads ``slk_<key_id>_<secret>``. Only ``sha256(key)`` is stored: the secret is
32 random bytes, so a fast hash is enough (no salt or stretching needed, as with
GitHub tokens), and the plaintext is shown once, at creation. ``key_id`` is the
public handle used to list and revoke keys and to rate-limit them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from serving.errors import InvalidRequest, NotFound, Unauthenticated

SCOPES: tuple[str, ...] = ("recommend", "feedback", "admin:campaigns", "admin:experiments", "admin:privacy")
"""Every scope a key may hold; each gRPC method requires exactly one of them."""

_PREFIX = "slk_"


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    owner: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    rate_per_s: float | None = None
    """Own request rate; ``None`` uses ``settings.serving.rate_limit_rps``."""
    burst: int | None = None
    """Own burst; ``None`` uses ``settings.serving.rate_limit_burst``."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_id_of(plaintext: str) -> str | None:
    """The key id inside a plaintext key, or None when it is not shaped like one."""
    if not plaintext.startswith(_PREFIX):
        return None
    parts = plaintext[len(_PREFIX):].split("_", 1)
    return parts[0] if len(parts) == 2 and parts[0] and parts[1] else None


def _table(metadata):
    from sqlalchemy import Column, DateTime, Float, Integer, String, Table

    return Table(
        "serving_api_keys", metadata,
        Column("key_id", String(32), primary_key=True),
        Column("owner", String(200), nullable=False),
        Column("scopes", String(500), nullable=False),       # space-separated
        Column("key_hash", String(64), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
        Column("rate_per_s", Float, nullable=True),
        Column("burst", Integer, nullable=True),
    )


class ApiKeyStore:
    """Create, list, revoke and verify API keys in the ``serving_api_keys`` table.

    ``verify`` caches a positive answer for ``cache_s`` seconds so the request path
    does not read the database each time; ``revoke`` on the same store takes effect at
    once, on other processes within ``cache_s``.
    """

    def __init__(self, db_url: str, *, cache_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        from sqlalchemy import MetaData, create_engine

        if db_url.startswith("sqlite:///"):
            Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self._engine = create_engine(db_url, future=True)
        self._table = _table(MetaData())
        self._table.create(self._engine, checkfirst=True)
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "ApiKeyStore":
        return cls(settings.campaign_db_url, cache_s=settings.serving.api_key_cache_s)

    def close(self) -> None:
        self._engine.dispose()

    def create_key(self, owner: str, scopes: Iterable[str], *, rate_per_s: float | None = None,
                   burst: int | None = None) -> str:
        """Store a new key and return its plaintext (the only time it is shown)."""
        scopes = frozenset(scopes)
        unknown = sorted(scopes - set(SCOPES))
        if unknown or not scopes:
            raise InvalidRequest(
                f"unknown scope(s) {', '.join(unknown) or '(none given)'}; use some of: {', '.join(SCOPES)}",
                field="scopes")
        if not owner.strip():
            raise InvalidRequest("owner is empty; name the app, marketer or analyst the key is for", field="owner")
        key_id = secrets.token_hex(6)
        plaintext = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self._engine.begin() as conn:
            conn.execute(self._table.insert().values(
                key_id=key_id, owner=owner.strip(), scopes=" ".join(sorted(scopes)), key_hash=_hash(plaintext),
                created_at=datetime.now(timezone.utc), rate_per_s=rate_per_s, burst=burst,
            ))
        return plaintext

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = self._table.select().order_by(self._table.c.created_at)
        if not include_revoked:
            query = query.where(self._table.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query)]

    def get(self, key_id: str) -> ApiKey:
        with self._engine.connect() as conn:
            row = conn.execute(self._table.select().where(self._table.c.key_id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key {key_id!r}; 'sightline serve keys list' shows the ids")
        return self._row(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (kept for audit); later requests with it are UNAUTHENTICATED."""
        with self._engine.begin() as conn:
            result = conn.execute(
                self._table.update().where(self._table.c.key_id == key_id, self._table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(timezone.utc)))
        with self._lock:
            self._cache = {h: v for h, v in self._cache.items() if v[0].key_id != key_id}
        key = self.get(key_id)
        if result.rowcount == 0 and key.active:  # pragma: no cover - concurrent un-revoke is impossible
            raise NotFound(f"API key {key_id!r} could not be revoked")
        return key

    def verify(self, plaintext: str | None) -> ApiKey:
        """The active key for ``plaintext``; raises ``Unauthenticated`` naming the fix."""
        if not plaintext:
            raise Unauthenticated("missing API key; send it in the 'x-api-key' metadata "
                                  "(create one with 'sightline serve keys create')")
        digest = _hash(plaintext)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        key_id = key_id_of(plaintext)
        row = None
        if key_id is not None:
            with self._engine.connect() as conn:
                row = conn.execute(self._table.select().where(self._table.c.key_id == key_id)).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise Unauthenticated("unknown API key in 'x-api-key'; check it or create one with "
                                  "'sightline serve keys create'")
        key = self._row(row)
        if not key.active:
            raise Unauthenticated(f"API key {key.key_id} was revoked; ask for a new one")
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (key, now + self._cache_s)
        return key

    @staticmethod
    def _row(row) -> ApiKey:
        def utc(value):
            return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

        return ApiKey(
            key_id=row.key_id, owner=row.owner, scopes=frozenset(row.scopes.split()),
            created_at=utc(row.created_at), revoked_at=utc(row.revoked_at),
            rate_per_s=row.rate_per_s, burst=row.burst,
        )
