"""Feature access for serving: per-request user features, and a cache of item and
campaign features refreshed in the background.

One Feast read of one entity costs ~0.3 ms, of 250 entities ~14 ms: so the user's rows
are read per request (only with personalization consent), while item and campaign
statistics for the whole snapshot are read every ``serving.feature_refresh_s`` by a
background thread into a plain dict. A failing user read opens a short circuit (no
reads for ``cooldown_s``) so a down store costs one failure, not one per request.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Callable, Iterable, Mapping

log = logging.getLogger(__name__)

USER_VIEWS: tuple[tuple[str, str], ...] = (("user_context", "user"), ("user_engagement", "user"))
ITEM_VIEWS: tuple[tuple[str, str, str], ...] = (("item_stats", "item_id", "item"), ("campaign_stats", "campaign_id", "campaign"))


def _feature_refs(view_name: str) -> list[str]:
    from features import VIEWS_BY_NAME

    return [f"{view_name}:{n}" for n in VIEWS_BY_NAME[view_name].feature_names]


class UserFeatures:
    """Reads a user's online rows (``user_context`` + ``user_engagement``) from Feast.

    ``get(user_key)`` returns ``{"user_<field>": value}`` with only the non-null fields,
    ``{}`` when the user has no rows, and raises when the store fails (the caller falls
    back and counts it). ``store_factory`` opens the Feast store lazily (import ~3 s).

    The read goes to the store's provider (``Provider.online_read``, one call per view,
    whatever the online store: SQLite here, Redis in prod) with the views and the value
    types resolved once at ``warm``. ``FeatureStore.get_online_features`` answers the same
    (a test pins it) but re-resolves the feature references against the registry, builds a
    response protobuf and converts it back on every call: in-process that was ~13 % of a
    Recommend's CPU, on the interpreter every request thread shares.
    """

    def __init__(self, store_factory: Callable[[], object], *, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = store_factory
        self._store = None
        self._refs: list[str] | None = None
        self._reads: list[tuple] = []
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._open_until = 0.0
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Open the store now (at start-up, not on the first request)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    store = self._factory()
                    self._reads = [_ViewRead.of(store, view, entity) for view, entity in USER_VIEWS]
                    self._refs = [r for view, _ in USER_VIEWS for r in _feature_refs(view)]
                    self._store = store

    @property
    def circuit_open(self) -> bool:
        return self._clock() < self._open_until

    def get(self, user_key: str) -> dict:
        if self.circuit_open:
            raise ConnectionError("feature store circuit open after a recent failure")
        try:
            self.warm()
            out: dict = {}
            for read in self._reads:
                read.into(out, user_key, "user_")
            return out
        except Exception:
            self._open_until = self._clock() + self._cooldown_s
            raise

    def get_via_feature_store(self, user_key: str) -> dict:
        """The same answer through ``FeatureStore.get_online_features`` (the reference ``get``
        is checked against; not used on the request path)."""
        self.warm()
        data = self._store.get_online_features(features=self._refs, entity_rows=[{"user_id": user_key}]).to_dict()
        return {f"user_{k}": v[0] for k, v in data.items() if k != "user_id" and v and v[0] is not None}


class _ViewRead:
    """One feature view's online read for one entity, resolved once: the provider, the
    ``FeatureView``, its feature names and their value types."""

    def __init__(self, store, provider, view, join_key: str) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        self._config = store.config
        self._provider = provider
        self._view = view
        self._names = [f.name for f in view.features]
        self._types = {f.name: f.dtype.to_value_type() for f in view.features}
        self._join_key = join_key
        self._entity_key, self._value = EntityKey, Value
        self._to_python = feast_value_type_to_python_type

    @classmethod
    def of(cls, store, view_name: str, entity: str) -> "_ViewRead":
        return cls(store, store._get_provider(), store.get_feature_view(view_name), store.get_entity(entity).join_key)

    def into(self, out: dict, entity: str, prefix: str) -> None:
        """Add ``prefix + name → value`` for the entity's non-null features to ``out``."""
        key = self._entity_key(join_keys=[self._join_key], entity_values=[self._value(string_val=entity)])
        ((_, values),) = self._provider.online_read(config=self._config, table=self._view, entity_keys=[key],
                                                    requested_features=self._names)
        if not values:
            return
        types, to_python = self._types, self._to_python
        for name in self._names:
            value = values.get(name)
            if value is not None:
                py = to_python(value, types[name])
                if py is not None:
                    out[prefix + name] = py


class ItemFeatureCache:
    """Item (creative or sku) and campaign statistics for every id in the snapshot.

    ``item(id)`` / ``campaign(id)`` return ``{"item_<field>": value}`` dicts (empty when
    unknown). ``refresh(item_ids, campaign_ids)`` reads Feast in chunks; the background
    thread calls it every ``refresh_s`` with ids from ``ids_fn``. A failed refresh keeps
    the previous values (counted in ``failures``).
    """

    def __init__(self, store_factory: Callable[[], object], ids_fn: Callable[[], tuple[Iterable[str], Iterable[str]]],
                 *, refresh_s: float = 5.0, chunk: int = 250, pause_s: float = 0.002) -> None:
        self._factory = store_factory
        self._store = None
        self._ids_fn = ids_fn
        self.refresh_s = refresh_s
        self._chunk = chunk
        self._pause_s = pause_s
        self._items: Mapping[str, dict] = {}
        self._campaigns: Mapping[str, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0
        self.failures = 0
        self.last_refresh_s = 0.0

    def item(self, item_id: str) -> dict:
        return self._items.get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._campaigns.get(campaign_id, {})

    def _read(self, view: str, key: str, prefix: str, ids: list[str]) -> dict[str, dict]:
        refs = _feature_refs(view)
        out: dict[str, dict] = {}
        # small chunks with a pause between them: one Feast read of 2,000 rows held the GIL for
        # ~200 ms and stalled every request thread (p99 spikes of up to 1.3 s at 100 rps)
        for i in range(0, len(ids), self._chunk):
            if i and self._pause_s:
                time.sleep(self._pause_s)
            part = ids[i:i + self._chunk]
            data = self._store.get_online_features(features=refs, entity_rows=[{key: x} for x in part]).to_dict()
            names = [n for n in data if n != key]
            for j, entity in enumerate(data[key]):
                row = {f"{prefix}_{n}": data[n][j] for n in names if data[n][j] is not None}
                if row:
                    out[entity] = row
        return out

    def refresh(self, item_ids: Iterable[str] | None = None, campaign_ids: Iterable[str] | None = None) -> None:
        if item_ids is None or campaign_ids is None:
            item_ids, campaign_ids = self._ids_fn()
        if self._store is None:
            self._store = self._factory()        # not timed: opening (importing) Feast is not reading
        started = time.perf_counter()
        items = self._read("item_stats", "item_id", "item", sorted(set(item_ids)))
        campaigns = self._read("campaign_stats", "campaign_id", "campaign", sorted(set(campaign_ids)))
        self._items, self._campaigns = items, campaigns   # two reference swaps; readers never lock
        self.refreshes += 1
        self.last_refresh_s = time.perf_counter() - started

    def start(self) -> "ItemFeatureCache":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="serving-item-features", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the last values
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("item feature refresh failed (%d times; keeping the last values): %s", self.failures, exc)
            # never spend more than ~10 % of a core on refreshing (large catalogs read slowly)
            if self._stop.wait(max(self.refresh_s, 10 * self.last_refresh_s)):
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class ItemFeatureProcess:
    """``ItemFeatureCache`` with the Feast reads in a child process.

    Why: reading the statistics of the whole snapshot (~53,000 items) through Feast costs
    ~1.3 s of pure-Python CPU per refresh. In the server process that work holds the GIL
    the request threads need — even in small chunks it took about half the interpreter
    for the length of every refresh, so requests queued behind it (at 100 requests/s p50
    rose from ~8 ms to over 100 ms while it ran). Here a child process does the reads
    every ``refresh_s`` (stretched to 10× the read time, as in the thread version) and
    sends back only the rows that changed, in slices of ``slice_rows``; a thread of this
    process applies each slice to the in-memory dicts and yields between slices. Readers
    (``item``/``campaign``) never lock: single-key dict operations are atomic.

    ``version_fn`` is polled every ``refresh_s`` (cheap: the current catalog object); when it
    returns a different object, ``ids_fn`` gives the new id lists, which go to the child for
    its next refresh. (Rebuilding and comparing ~53,000 sorted ids every poll held the GIL
    for up to a few hundred ms on a busy machine.)
    """

    def __init__(self, settings, ids_fn: Callable[[], tuple[Iterable[str], Iterable[str]]], *,
                 version_fn: Callable[[], object] | None = None, refresh_s: float = 5.0,
                 slice_rows: int = 2_000) -> None:
        self._settings = settings
        self._ids_fn = ids_fn
        self._version_fn = version_fn or ids_fn
        self._sent_version: object = None
        self.refresh_s = refresh_s
        self._slice_rows = slice_rows
        self._items: dict[str, dict] = {}
        self._campaigns: dict[str, dict] = {}
        self._child = None
        self._conn = None
        self._reply = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._sent_ids: tuple | None = None
        self.refreshes = 0
        self.failures = 0
        self.last_refresh_s = 0.0
        self.last_error = ""

    def item(self, item_id: str) -> dict:
        return self._items.get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._campaigns.get(campaign_id, {})

    def start(self) -> "ItemFeatureProcess":
        if self._child is not None:
            return self
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-c", "from serving._features import _refresher_stdio; _refresher_stdio()"]
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self._conn = Connection(os.dup(self._child.stdin.fileno()), readable=False)
        self._reply = Connection(os.dup(self._child.stdout.fileno()), writable=False)
        self._child.stdin.close()
        self._child.stdout.close()
        self._conn.send_bytes(pickle.dumps(("config", self._settings, self.refresh_s, self._slice_rows)))
        self._stop.clear()
        self._send_ids()
        self._threads = [threading.Thread(target=self._apply, name="serving-item-features", daemon=True),
                         threading.Thread(target=self._watch_ids, name="serving-item-ids", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _send_ids(self) -> None:
        version = self._version_fn()
        if self._sent_ids is not None and version is self._sent_version:
            return
        item_ids, campaign_ids = self._ids_fn()
        ids = (tuple(sorted(set(item_ids))), tuple(sorted(set(campaign_ids))))
        if ids != self._sent_ids:
            self._conn.send_bytes(pickle.dumps(("ids", *ids)))
            self._sent_ids = ids
        self._sent_version = version

    def _watch_ids(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._send_ids()
            except (OSError, EOFError):
                return
            except Exception as exc:  # noqa: BLE001 - the snapshot may be briefly unreadable
                log.debug("item ids unavailable: %s", exc)

    def _apply(self) -> None:
        """Apply the child's slices of changed rows as they arrive (``None`` = row gone)."""
        while True:
            try:
                data = self._reply.recv_bytes()
            except (EOFError, OSError):
                return
            kind, *rest = pickle.loads(data)
            if kind == "rows":
                view, rows = rest
                target = self._items if view == "item" else self._campaigns
                for key, row in rows:
                    if row is None:
                        target.pop(key, None)
                    else:
                        target[key] = row
                time.sleep(0)                            # let request threads in between slices
            elif kind == "done":
                self.refreshes += 1
                self.last_refresh_s = rest[0]
            elif kind == "error":
                self.failures += 1
                self.last_error = rest[0]
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("item feature refresh failed (%d times; keeping the last values): %s",
                                self.failures, rest[0])

    def stop(self, timeout: float = 5.0) -> None:
        if self._child is None:
            return
        self._stop.set()
        try:
            self._conn.send_bytes(b"")
        except (OSError, EOFError):
            pass
        try:
            self._child.wait(timeout)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            self._child.kill()
            self._child.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        self._conn.close()
        self._reply.close()
        self._child = None


_REFRESHER_NICE = 10
"""Niceness the item-statistics refresher adds to its own: it yields the CPU to serving."""


def _refresher_stdio() -> None:
    """Entry of the refresher process: commands on stdin, slices of changed rows on stdout."""
    import os
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the parent decides when to stop
    # background work: the request threads of the server(s) come first when the cores are busy
    # (each read of ~53k items is ~1 s of CPU; at 300 calls/s on 2 cores, two servers' refreshers
    # running at normal priority stalled requests for long enough to break p99)
    os.nice(_REFRESHER_NICE)
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)                                         # stray prints must not corrupt the channel
    conn = Connection(os.dup(0), writable=False)
    _, settings, refresh_s, slice_rows = pickle.loads(conn.recv_bytes())
    from features import open_store

    cache = ItemFeatureCache(lambda: open_store(settings), lambda: ((), ()), refresh_s=refresh_s, pause_s=0.0)
    ids: tuple = ((), ())
    sent: dict[str, dict] = {"item": {}, "campaign": {}}
    wait = 0.0
    while True:
        if conn.poll(wait):
            data = conn.recv_bytes()
            if not data:
                return
            _, item_ids, campaign_ids = pickle.loads(data)
            ids = (item_ids, campaign_ids)
            continue                                      # drain commands before reading
        if not ids[0] and not ids[1]:
            wait = refresh_s
            continue
        try:
            cache.refresh(*ids)
        except Exception as exc:  # noqa: BLE001 - report, keep the last values, retry
            out.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
            wait = refresh_s
            continue
        for view, fresh in (("item", cache._items), ("campaign", cache._campaigns)):
            old = sent[view]
            changed = [(k, v) for k, v in fresh.items() if old.get(k) != v]
            changed += [(k, None) for k in old if k not in fresh]
            for i in range(0, len(changed), slice_rows):
                out.send_bytes(pickle.dumps(("rows", view, changed[i:i + slice_rows]), protocol=pickle.HIGHEST_PROTOCOL))
            sent[view] = fresh
        out.send_bytes(pickle.dumps(("done", cache.last_refresh_s)))
        wait = max(refresh_s, 10 * cache.last_refresh_s)   # never more than ~10 % of a core
