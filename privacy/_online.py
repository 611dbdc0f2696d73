"""Deleting a user's rows from the Feast online store (SQLite locally, Redis in prod).

Feast 0.67 keeps no "delete these entities" API for either store, so this module
addresses the rows the way Feast writes them (pinned by a unit test against Feast's
own ``serialize_entity_key``, so a Feast upgrade that changes the layout fails loudly):

- SQLite: one table ``<project>_<view>`` per view, one row per (entity_key, feature);
  ``entity_key`` is the serialized EntityKey (version 3).
- Redis: one hash per entity, key = serialized EntityKey + project name, holding the
  features of *every* view with that join key; deleting the key erases them all.

Serializing here (a few lines) instead of importing Feast keeps erasure at well under a
second instead of Feast's multi-second import.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass

from privacy.errors import StoreUnavailable

_STRING = 2  # feast ValueType.STRING / Value.string_val


def entity_key_bytes(join_key: str, value: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for one string join key."""
    k, v = join_key.encode(), value.encode()
    return (struct.pack("<I", 1) + struct.pack("<I", _STRING) + struct.pack("<I", len(k)) + k
            + struct.pack("<I", _STRING) + struct.pack("<I", len(v)) + v)


@dataclass
class OnlineResult:
    store: str
    location: str
    rows: int
    entities: int
    views: tuple[str, ...]


def _user_views():
    from features import VIEWS

    return [v for v in VIEWS if v.user_keyed]


def erase_online(settings, uids: list[str]) -> OnlineResult:
    """Delete every online row of ``uids`` in the user-keyed views; count what went."""
    views = _user_views()
    if settings.feast.online_store == "redis":
        return _erase_redis(settings, uids, views)
    return _erase_sqlite(settings, uids, views)


def _erase_sqlite(settings, uids, views) -> OnlineResult:
    path = (settings.feast_dir / "online.db").resolve()
    if not path.exists():
        return OnlineResult("feast_online_sqlite", str(path), 0, 0, tuple(v.name for v in views))
    try:
        db = sqlite3.connect(str(path), timeout=30)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open the Feast online store {path}: {exc}") from exc
    rows = 0
    entities: set[tuple[str, bytes]] = set()
    try:
        db.execute("PRAGMA secure_delete = ON")  # overwrite deleted rows' bytes, not just unlink them
        with db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for view in views:
                table = f"{settings.feast.project}_{view.name}"
                if table not in tables:
                    continue
                for uid in uids:
                    key = entity_key_bytes(view.entity, uid)
                    n = db.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,)).rowcount
                    if n:
                        rows += n
                        entities.add((view.name, key))
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"deleting from the Feast online store {path} failed: {exc}; retry the erasure") from exc
    finally:
        db.close()
    return OnlineResult("feast_online_sqlite", str(path), rows, len(entities), tuple(v.name for v in views))


def redis_keys(project: str, views, uids: list[str]) -> list[bytes]:
    """The Redis hash keys holding the user-keyed views of ``uids`` (one per join key and user)."""
    join_keys = sorted({v.entity for v in views})
    return [entity_key_bytes(jk, uid) + project.encode() for jk in join_keys for uid in uids]


def _erase_redis(settings, uids, views) -> OnlineResult:
    import redis

    url = settings.feast.redis_url or ""
    host, _, port = url.split(",")[0].partition(":")
    try:
        client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=10)
        keys = redis_keys(settings.feast.project, views, uids)
        deleted = int(client.delete(*keys)) if keys else 0
        client.close()
    except redis.RedisError as exc:
        raise StoreUnavailable(f"cannot reach the Redis online store at {url}: {exc}; start it and retry") from exc
    return OnlineResult("feast_online_redis", url, deleted, deleted, tuple(v.name for v in views))


def purge_online_sqlite(settings, cutoff_ms: int, *, dry_run: bool = False) -> OnlineResult | None:
    """Delete user-keyed online rows whose event time is before ``cutoff_ms`` (SQLite store only).

    A user who stops using the app keeps a row forever otherwise: the view TTL only hides
    it from serving. Feast's SQLite store keeps ``event_ts`` as epoch seconds (its last
    registered datetime adapter) — ISO text is handled too. The Redis store expires keys
    itself when ``key_ttl_seconds`` is set in feature_store.yaml; None is returned for it.
    """
    if settings.feast.online_store != "sqlite":
        return None
    from datetime import datetime, timezone

    path = (settings.feast_dir / "online.db").resolve()
    views = _user_views()
    if not path.exists():
        return OnlineResult("feast_online_sqlite", str(path), 0, 0, tuple(v.name for v in views))
    cutoff_s = cutoff_ms // 1000
    cutoff_iso = datetime.fromtimestamp(cutoff_s, tz=timezone.utc).replace(tzinfo=None).isoformat()
    where = ("(typeof(event_ts) IN ('integer', 'real') AND event_ts < ?) "
             "OR (typeof(event_ts) = 'text' AND event_ts < ?)")
    rows = 0
    entities = 0
    try:
        db = sqlite3.connect(str(path), timeout=30)
        db.execute("PRAGMA secure_delete = ON")
        with db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for view in views:
                table = f"{settings.feast.project}_{view.name}"
                if table not in tables:
                    continue
                entities += db.execute(f'SELECT count(DISTINCT entity_key) FROM "{table}" WHERE {where}',
                                       (cutoff_s, cutoff_iso)).fetchone()[0]
                if dry_run:
                    rows += db.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', (cutoff_s, cutoff_iso)).fetchone()[0]
                else:
                    rows += db.execute(f'DELETE FROM "{table}" WHERE {where}', (cutoff_s, cutoff_iso)).rowcount
        db.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"purging the Feast online store {path} failed: {exc}; retry the purge") from exc
    return OnlineResult("feast_online_sqlite", str(path), rows, entities, tuple(v.name for v in views))
