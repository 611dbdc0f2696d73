"""Item (creative or sku) and campaign statistics for the request path, kept fresh by one
refresher process that any number of server processes subscribe to.

Why a separate process: reading the statistics of a whole snapshot (~53,000 items in
the benchmark world) is pure-Python work; in a server process it would hold the GIL the
request threads need. Why one for several servers: each server process of a
``ServerGroup`` would otherwise read the same rows again, and on a 2-core machine the
duplicated reads cost more than anything else beside the requests themselves (a
profile at 250 requests/s: the two refreshers took 13 % of all sampled CPU).

The refresher (``ItemStatsHub``) listens on a Unix socket. A subscriber
(``ItemFeatures``) connects, says which ids its catalog holds, receives every row the
hub holds, and from then on only the rows that changed (in slices, so applying them
never holds the subscriber's GIL for long). The hub reads the union of its subscribers'
ids every ``refresh_s``, stretched to 10× the read time so it never takes more than ~10 %
of a core, at nice +10 after its first read (start-up at normal priority: niced, it was starved by the servers starting beside it). It exits when its owner closes its lifeline (stdin). On the SQLite
online store most of those reads fetch only the rows written since the previous one
(``ItemStatsReader.changes``): re-reading and re-decoding every row to find the few that
changed cost ~0.5 ms of CPU per served request at 300 requests/s.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

VIEWS: tuple[tuple[str, str, str], ...] = (("item", "item_stats", "item"), ("campaign", "campaign_stats", "campaign"))
"""(kind, feature view, entity) of the statistics the request path reads; rows are keyed
``<kind>_<feature>`` as ``FeatureStore.get_online_features`` would name them."""

_NICE = 10
"""Niceness the hub adds to its own: the request threads of the servers come first."""


class ItemStatsReader:
    """Reads the statistics rows of many ids through the Feast provider's ``online_read``.

    ``FeatureStore.get_online_features`` answers the same (a test pins it) but for ~53,000
    ids it also builds and converts a response protobuf: ~1 s of CPU per read against
    ~0.2 s here. The entity keys of an id list are built once and reused while the list
    is the same object.

    ``read`` reads every id; ``changes`` (the hub's periodic read) mostly reads only what
    was written since its previous call: see there. ``full_every`` and ``overlap_s`` tune it.
    """

    def __init__(self, store, chunk: int = 2_000, *, full_every: int = 12, overlap_s: int = 10) -> None:
        from serving._features import _ViewRead

        if full_every < 1:
            raise ValueError(f"full_every is {full_every}; set it to 1 (always read everything) or more")
        self._store = store
        self._reads = {kind: _ViewRead.of(store, view, entity) for kind, view, entity in VIEWS}
        self._chunk = chunk
        self._keys: dict[str, tuple[object, list]] = {}
        self._full_every = full_every
        self._overlap_s = overlap_s
        self._tables: dict[str, _SqliteChanges | None] = {}
        self._sqlite = None
        self._failures = 0

    def prepare(self, kind: str) -> None:
        """Open what the incremental read of ``kind`` needs now rather than on the first read."""
        self._table(kind)

    def changes(self, kind: str, ids: Sequence[str]) -> "StatsRead":
        """The rows of ``ids`` that may have changed since the previous call: all of them
        (``full``, what ``read`` returns) or only the ones written since.

        On Feast's SQLite online store (profile ``local``) a full read is followed by up to
        ``full_every - 1`` incremental ones, which fetch the complete rows of the entities
        with a feature row whose ``event_ts`` is at least the largest one seen so far (never
        later than now) minus ``overlap_s``, and nothing at all when nothing was committed
        to the database since the previous read (``PRAGMA data_version``).

        Bounds: ``event_ts`` is a row's *event* time, not the time it was written. A row
        written with an event time more than ``overlap_s`` older than the newest one
        already seen (a lagging ingest worker, a late event) and a deleted row (retention,
        erasure) reach the caller only with the next full read: within ``full_every`` reads
        (~1 min at the default 12 × 5 s). A full read happens also when ``ids`` is not the
        object of the previous call, on any other online store (Redis in ``prod``), when the
        table does not have the layout this reads, and whenever the incremental read fails.
        """
        table = self._table(kind)
        if table is not None and ids and table.ids is ids:
            try:
                if table.reads_since_full + 1 < self._full_every:
                    return StatsRead(False, table.read())
                if table.unchanged_since_full():     # a full read would return what the last one did
                    table.reads_since_full = 0
                    return StatsRead(False, {})
            except Exception as exc:  # noqa: BLE001 - any failure: read everything instead
                self._failed(kind, exc)
        return self._read_full(kind, ids, table)

    def _read_full(self, kind: str, ids: Sequence[str], table: "_SqliteChanges | None") -> "StatsRead":
        mark = None
        if table is not None and ids:
            table.ids = None                         # until this read succeeds, the next one is full too
            try:
                mark = table.mark()                  # before the read: what is written during it comes next time
            except _LayoutChanged as exc:
                log.warning("reading every %s statistics row from now on: %s", kind, exc)
                self._tables[kind] = None
            except Exception as exc:  # noqa: BLE001 - the full read below does not need it
                self._failed(kind, exc)
        rows = self.read(kind, ids)
        if mark is not None:
            table.full_done(ids, mark)
        return StatsRead(True, rows)

    def _failed(self, kind: str, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1 or self._failures % 100 == 0:
            log.warning("incremental read of the %s statistics failed (%d times; reading them all instead): %s: %s",
                        kind, self._failures, type(exc).__name__, exc)

    def _table(self, kind: str) -> "_SqliteChanges | None":
        if kind not in self._tables:
            self._tables[kind] = self._open_table(kind)
        return self._tables[kind]

    def _open_table(self, kind: str) -> "_SqliteChanges | None":
        """The incremental reader of ``kind`` on Feast's SQLite online table; None (full reads
        only) on another online store or another table or key layout."""
        config = self._store.config
        if getattr(config.online_store, "type", None) != "sqlite":
            return None
        try:
            import sqlite3

            from streaming._feast import FeastSink

            _, view_name, entity = next(v for v in VIEWS if v[0] == kind)
            sink = FeastSink(self._store, None)     # for Feast's table name and key layout, not for writing
            table = sink.sqlite_table(view_name)
            key_prefix = sink.row_encoder().key_prefixes.get(self._store.get_entity(entity).join_key)
            if self._sqlite is None:
                path = self._store._get_provider().online_store._get_db_path(config)
                self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._sqlite.execute("PRAGMA query_only = 1")
            columns = {row[1] for row in self._sqlite.execute(f'PRAGMA table_info("{table}")')}
            missing = sorted({"entity_key", "feature_name", "value", "event_ts"} - columns)
            if key_prefix is None or missing:
                why = f"table {table} lacks {missing}" if missing else "Feast's entity-key layout is not the known one"
                log.warning("reading every %s statistics row: %s", kind, why)
                return None
            types = {f.name: f.dtype.to_value_type() for f in self._store.get_feature_view(view_name).features}
            return _SqliteChanges(self._sqlite, table, key_prefix, types, f"{kind}_", self._overlap_s)
        except Exception as exc:  # noqa: BLE001 - full reads work without it
            log.warning("reading every %s statistics row (no incremental reads): %s: %s", kind, type(exc).__name__, exc)
            return None

    def read(self, kind: str, ids: Sequence[str]) -> dict[str, dict]:
        """``id → {"<kind>_<feature>": value}`` for the ids that have a non-null feature."""
        view = self._reads[kind]
        cached = self._keys.get(kind)
        if cached is None or cached[0] is not ids:
            cached = self._keys[kind] = (ids, [view.key(x) for x in ids])
        keys = cached[1]
        out: dict[str, dict] = {}
        prefix = f"{kind}_"
        for i in range(0, len(ids), self._chunk):
            for entity, row in zip(ids[i:i + self._chunk], view.many(keys[i:i + self._chunk], prefix)):
                if row:
                    out[entity] = row
        return out


@dataclass(frozen=True)
class StatsRead:
    """One ``ItemStatsReader.changes`` of one kind."""

    full: bool
    """True: ``rows`` holds every wanted id that has a row (a wanted id missing from it has
    none); False: only the ids written since the previous read."""
    rows: dict[str, dict]
    """``id → {"<kind>_<feature>": value}``; in an incremental read ``{}`` means the id's
    features are all null now (the full read leaves such an id out)."""


class _LayoutChanged(Exception):
    """The online table does not hold what the incremental read expects."""


_PLAIN = ("string", "bytes", "int32", "int64", "double", "float", "bool")
_SCALAR_FIELDS = frozenset(f"{t}_val" for t in _PLAIN)
_LIST_FIELDS = frozenset(f"{t}_list_val" for t in _PLAIN)
_PLAIN_TYPES = frozenset(t.upper() for t in _PLAIN) | frozenset(f"{t.upper()}_LIST" for t in _PLAIN)


def _value_decoder(types: dict) -> Callable[[str, bytes], object]:
    """``(feature name, serialized feast Value) → Python value``, equal (type included) to what
    ``feast_value_type_to_python_type`` gives the full read. Plain types (numbers, strings,
    bytes, bools and their lists) take the set oneof field as it is (a list for ``*_list_val``),
    which is all Feast does for them; anything else (UUIDs, maps, timestamps) goes to Feast's
    own conversion. ``types``: feature name → ``feast.ValueType``."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type as to_python

    plain = {name for name, t in types.items() if t.name in _PLAIN_TYPES}
    parse = Value.FromString

    def decode(name: str, blob: bytes) -> object:
        value = parse(blob)
        field = value.WhichOneof("val")
        if field is None:
            return None
        if name in plain:
            if field in _SCALAR_FIELDS:
                return getattr(value, field)
            if field in _LIST_FIELDS:
                return list(getattr(value, field).val)
        return to_python(value, types[name])

    return decode


def _store_now() -> int:
    """Now as Feast's SQLite adapter stores a time: ``int(naive_utc.timestamp())``."""
    return int(datetime.now(timezone.utc).replace(tzinfo=None).timestamp())


class _SqliteChanges:
    """The incremental read of one view in Feast's SQLite online table (``ItemStatsReader.changes``).

    The table has a row per (entity, feature): ``entity_key`` (the serialized key:
    ``streaming._online_rows.entity_key_prefix`` + 4-byte little-endian length + utf-8 id),
    ``feature_name``, ``value`` (a serialized ``feast.types.Value``), ``event_ts`` (the row's
    event time in epoch seconds, as Feast's sqlite3 adapter stores a naive UTC time, the
    same as ``SqliteRowEncoder`` writes) and ``created_ts`` (null: neither Feast's
    ``write_to_online_store`` of these views nor ``FeastSink`` sets it, so only ``event_ts``
    can say what is new). No index covers ``event_ts``: a read scans the table in SQLite
    (~0.4 M rows in the benchmark world), then decodes in Python only the entities found.
    """

    def __init__(self, conn, table: str, key_prefix: bytes, types: dict, prefix: str, overlap_s: int) -> None:
        self._conn = conn
        self._table = table
        self._key_prefix = key_prefix
        self._decode = _value_decoder(types)
        self._names = set(types)
        self._prefix = prefix
        self._overlap_s = overlap_s
        self._changed_sql = (f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" WHERE entity_key IN '
                             f'(SELECT entity_key FROM "{table}" WHERE event_ts >= ?)')
        self.ids: Sequence[str] | None = None    # the ids of the last full read; None: the next read is full
        self.reads_since_full = 0
        self._wanted: dict[bytes, str] = {}      # serialized key → id, of ``ids``
        self._latest = 0                         # the largest event_ts seen
        self._version = -1                       # data_version at the previous read
        self._full_version = -1                  # data_version at the last full read

    def _data_version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def mark(self) -> tuple[int, int]:
        """(data version, largest ``event_ts``) now, taken just before a full read."""
        version = self._data_version()
        (latest,) = self._conn.execute(f'SELECT MAX(event_ts) FROM "{self._table}"').fetchone()
        if latest is not None and type(latest) is not int:
            raise _LayoutChanged(f"event_ts of {self._table} holds {type(latest).__name__} values, not epoch seconds")
        return version, latest or 0

    def full_done(self, ids: Sequence[str], mark: tuple[int, int]) -> None:
        """A full read of ``ids`` that started at ``mark`` succeeded: read incrementally from here."""
        if ids is not self.ids:
            prefix = self._key_prefix
            self._wanted = {prefix + len(raw).to_bytes(4, "little") + raw: x for x in ids for raw in (x.encode(),)}
        self._version = self._full_version = mark[0]
        self._latest = mark[1]
        self.reads_since_full = 0
        self.ids = ids

    def unchanged_since_full(self) -> bool:
        """True when nothing was committed to the database since the last full read began."""
        return self._data_version() == self._full_version

    def read(self) -> dict[str, dict]:
        """The complete rows of the wanted entities with a feature row written since the last read."""
        self.reads_since_full += 1
        version = self._data_version()
        if version == self._version:
            return {}
        since = min(self._latest, _store_now()) - self._overlap_s   # one row stamped in the future must not stop reads
        found = self._conn.execute(self._changed_sql, (since,)).fetchall()
        wanted, names, decode, prefix = self._wanted, self._names, self._decode, self._prefix
        latest = self._latest
        out: dict[str, dict] = {}
        for key, name, blob, ts in found:
            if ts is not None and ts > latest:
                latest = ts
            entity = wanted.get(key)
            if entity is None:
                continue
            row = out.get(entity)
            if row is None:
                row = out[entity] = {}
            if name in names and blob is not None:
                value = decode(name, blob)
                if value is not None:
                    row[prefix + name] = value
        self._latest, self._version = latest, version
        return out


class ItemStatsHub:
    """The refresher process (see the module docstring); ``address`` is its Unix socket."""

    def __init__(self, settings, *, refresh_s: float | None = None, slice_rows: int = 2_000) -> None:
        self._settings = settings
        self.refresh_s = settings.serving.feature_refresh_s if refresh_s is None else refresh_s
        self._slice_rows = slice_rows
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self.address = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 60.0) -> "ItemStatsHub":
        if self._proc is not None:
            return self
        self._dir = tempfile.mkdtemp(prefix="sightline-stats-")    # short: a socket path has ~100 bytes
        self.address = os.path.join(self._dir, "hub.sock")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-c", "from serving._item_stats import _hub_main; _hub_main()"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        config = pickle.dumps((self._settings, self.refresh_s, self._slice_rows, self.address))
        self._proc.stdin.write(len(config).to_bytes(8, "big") + config)
        self._proc.stdin.flush()
        ready = self._proc.stdout.readline()       # the hub says "ready" once it listens
        if ready.strip() != b"ready":
            code = self._proc.wait(timeout_s)
            self._proc = None
            from serving.errors import Unavailable

            raise Unavailable(f"the item-statistics refresher did not start (exit code {code}); see its log above")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()               # the lifeline: the hub exits on EOF
        except OSError:
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout_s)
        self._proc.stdout.close()
        self._proc = None
        try:
            os.unlink(self.address)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass

    def __enter__(self) -> "ItemStatsHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ItemFeatures:
    """A server process's view of the item and campaign statistics (see the module docstring).

    ``item(id)`` / ``campaign(id)`` return ``{"item_<field>": value}`` dicts (empty when
    unknown) and never lock: single-key dict operations are atomic. ``hub_address``: the
    socket of a shared hub (a ``ServerGroup``'s); ``None`` starts and owns a hub of its own.

    ``version_fn`` is polled every ``refresh_s`` (cheap: the current catalog object); when it
    returns a different object, ``ids_fn`` gives the new id lists, which go to the hub.
    (Rebuilding and comparing ~53,000 sorted ids every poll held the GIL for up to a few
    hundred ms on a busy machine.)
    """

    def __init__(self, settings, ids_fn: Callable[[], tuple[Iterable[str], Iterable[str]]], *,
                 version_fn: Callable[[], object] | None = None, refresh_s: float | None = None,
                 hub_address: str | None = None) -> None:
        self._settings = settings
        self._ids_fn = ids_fn
        self._version_fn = version_fn or ids_fn
        self.refresh_s = settings.serving.feature_refresh_s if refresh_s is None else refresh_s
        self._hub_address = hub_address
        self._own_hub: ItemStatsHub | None = None
        self._rows: dict[str, dict[str, dict]] = {"item": {}, "campaign": {}}
        self._conn = None
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._sent_version: object = None
        self._sent_ids: tuple | None = None
        self._columns: list = []          # StatsColumns of the catalogs in use, newest last
        self._columns_lock = threading.Lock()
        self.refreshes = 0
        self.failures = 0
        self.last_refresh_s = 0.0
        self.last_error = ""

    @property
    def shared(self) -> bool:
        """Whether the rows come from a hub other server processes share."""
        return self._hub_address is not None

    def item(self, item_id: str) -> dict:
        return self._rows["item"].get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._rows["campaign"].get(campaign_id, {})

    def columns(self, n_rows: int, item_rows, ad_campaigns, keep: int = 2):
        """``StatsColumns`` for a catalog's rows, filled with the rows held now and kept up to
        date from then on (for the ``keep`` newest catalogs: requests may still hold the
        previous one while the next is swapped in)."""
        from serving._stats_columns import StatsColumns

        columns = StatsColumns(n_rows, item_rows, ad_campaigns)
        with self._columns_lock:
            for kind in ("item", "campaign"):
                columns.fill(kind, list(self._rows[kind].items()))
            self._columns = [*self._columns, columns][-keep:]
        return columns

    def start(self) -> "ItemFeatures":
        if self._conn is not None:
            return self
        from multiprocessing.connection import Client

        address = self._hub_address
        if address is None:
            self._own_hub = ItemStatsHub(self._settings, refresh_s=self.refresh_s).start()
            address = self._own_hub.address
        self._conn = Client(address, family="AF_UNIX")
        self._stop.clear()
        # read before the first write: a hub that already holds rows sends them all on
        # connect, and reads this subscriber's ids only after that. With both sides writing
        # more than a socket buffer and neither reading, start-up hung (53,000 item rows).
        reader = threading.Thread(target=self._apply, name="serving-item-features", daemon=True)
        reader.start()
        self._send_ids()
        watcher = threading.Thread(target=self._watch_ids, name="serving-item-ids", daemon=True)
        watcher.start()
        self._threads = [reader, watcher]
        return self

    def _send_ids(self) -> None:
        version = self._version_fn()
        if self._sent_ids is not None and version is self._sent_version:
            return
        item_ids, campaign_ids = self._ids_fn()
        ids = (tuple(sorted(set(item_ids))), tuple(sorted(set(campaign_ids))))
        if ids != self._sent_ids:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps(("ids", *ids), protocol=pickle.HIGHEST_PROTOCOL))
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
        """Apply the hub's slices of changed rows as they arrive (``None`` = row gone)."""
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                if not self._stop.is_set():
                    self.failures += 1
                    self.last_error = "the item-statistics refresher is gone"
                    log.error("the item-statistics refresher is gone; serving the last statistics until restart")
                return
            kind, *rest = pickle.loads(data)
            if kind == "rows":
                view, rows = rest
                target = self._rows[view]
                with self._columns_lock:
                    for key, row in rows:
                        if row is None:
                            target.pop(key, None)
                        else:
                            target[key] = row
                        for columns in self._columns:
                            columns.set(view, key, row)
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
        if self._conn is None:
            return
        import socket

        self._stop.set()
        try:   # wake the reading thread with an end of stream (closing under it is a race)
            with socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout)
        self._conn.close()
        self._conn = None
        if self._own_hub is not None:
            self._own_hub.stop(timeout)
            self._own_hub = None


# -- the hub process --------------------------------------------------------------------

class _Hub:
    """The hub's state: subscribers, the ids they need, the rows last sent (pure bookkeeping
    around ``ItemStatsReader``; the loop in ``_hub_main`` does the waiting)."""

    def __init__(self, open_reader: Callable[[], ItemStatsReader], slice_rows: int) -> None:
        self._open_reader = open_reader
        self._reader: ItemStatsReader | None = None
        self._slice_rows = slice_rows
        self.subscribers: dict[object, tuple[tuple, tuple]] = {}
        self.ids: tuple[tuple, tuple] = ((), ())
        self.rows: dict[str, dict[str, dict]] = {"item": {}, "campaign": {}}
        self.refreshed = False
        self.last_refresh_s = 0.0

    def add(self, conn) -> None:
        """A new subscriber gets every row held now (then only changes)."""
        self.subscribers[conn] = ((), ())
        if self.refreshed:
            self._send(conn, [(view, list(rows.items())) for view, rows in self.rows.items()])

    def drop(self, conn) -> None:
        """Forget a subscriber that left (its ids leave the union; no read is needed for that)."""
        self.subscribers.pop(conn, None)
        try:
            conn.close()
        except OSError:
            pass
        self._update_ids()

    def set_ids(self, conn, item_ids: tuple, campaign_ids: tuple) -> bool:
        """Record a subscriber's ids; True when the union the hub reads changed."""
        self.subscribers[conn] = (item_ids, campaign_ids)
        return self._update_ids()

    def _update_ids(self) -> bool:
        wanted = list(self.subscribers.values())
        if len(wanted) == 1:
            ids = wanted[0]
        else:   # the processes' snapshots may differ for a moment: read what any of them needs
            ids = tuple(tuple(sorted(set().union(*(w[k] for w in wanted)))) for k in (0, 1)) if wanted else ((), ())
        if ids == self.ids:
            return False
        self.ids = ids
        return True

    def open(self) -> None:
        """Open the reader (Feast and the incremental tables) if it is not open: not timed, so
        the set-up never stretches the interval between reads."""
        if self._reader is None:
            reader = self._open_reader()
            for kind in ("item", "campaign"):
                reader.prepare(kind)
            self._reader = reader

    def refresh(self) -> None:
        """Read the wanted rows that may have changed (``ItemStatsReader.changes``) and send
        each subscriber what did."""
        self.open()
        elapsed = 0.0
        changes: list[tuple[str, list]] = []
        try:
            for view, ids in zip(("item", "campaign"), self.ids):
                started = time.perf_counter()
                read = self._reader.changes(view, ids)
                elapsed += time.perf_counter() - started
                changes.append((view, self._apply(view, read)))
        finally:   # the campaign read failed after the item read: the item changes still go out (the reader moved on)
            self.last_refresh_s = elapsed
            if changes:
                self.refreshed = True
                for conn in list(self.subscribers):
                    self._send(conn, changes)

    def _apply(self, view: str, read: StatsRead) -> list[tuple[str, dict | None]]:
        """Update the rows held with one read; return the ``(id, row or None: gone)`` that changed."""
        old = self.rows[view]
        if read.full:
            changed = [(k, v) for k, v in read.rows.items() if old.get(k) != v]
            changed += [(k, None) for k in old if k not in read.rows]
            self.rows[view] = read.rows
            return changed
        changed = [(k, v or None) for k, v in read.rows.items() if old.get(k) != (v or None)]
        for k, v in changed:
            if v is None:
                old.pop(k, None)
            else:
                old[k] = v
        return changed

    def fail(self, message: str) -> None:
        for conn in list(self.subscribers):
            self._send_raw(conn, pickle.dumps(("error", message)))

    def _send(self, conn, changes: list[tuple[str, list]]) -> None:
        for view, changed in changes:
            for i in range(0, len(changed), self._slice_rows):
                blob = pickle.dumps(("rows", view, changed[i:i + self._slice_rows]), protocol=pickle.HIGHEST_PROTOCOL)
                if not self._send_raw(conn, blob):
                    return
        self._send_raw(conn, pickle.dumps(("done", self.last_refresh_s)))

    def _send_raw(self, conn, blob: bytes) -> bool:
        try:
            conn.send_bytes(blob)
            return True
        except (OSError, EOFError, BrokenPipeError):
            self.drop(conn)
            return False


def _hub_main() -> None:
    """Entry of the hub process: config on stdin (then stdin is the lifeline), "ready" on stdout."""
    import signal
    import socket
    from multiprocessing.connection import Listener, wait

    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the owner decides when to stop
    stdin = sys.stdin.buffer
    size = int.from_bytes(stdin.read(8), "big")
    settings, refresh_s, slice_rows, address = pickle.loads(stdin.read(size))
    listener = Listener(address, family="AF_UNIX", backlog=64)
    wake_r, wake_w = socket.socketpair()
    pending: list = []
    lock = threading.Lock()

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            with lock:
                pending.append(conn)
            wake_w.send(b"x")

    threading.Thread(target=accept, name="item-stats-accept", daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.dup2(2, 1)                                         # stray prints go to the log

    def open_reader() -> ItemStatsReader:
        from features import open_store

        return ItemStatsReader(open_store(settings))

    hub = _Hub(open_reader, slice_rows)
    try:   # open Feast now, while the servers start (importing it takes ~8 s here, far more under load)
        hub.open()
    except Exception as exc:  # noqa: BLE001 - the first refresh retries and reports it to the subscribers
        log.warning("item-statistics refresher could not open the feature store yet: %s", exc)
    lifeline = stdin.fileno()
    niced = False
    due = time.monotonic()
    while True:
        timeout = max(0.0, due - time.monotonic()) if any(hub.ids) else None
        for ready in wait([lifeline, wake_r, *hub.subscribers], timeout):
            if ready == lifeline:
                if not os.read(lifeline, 4096):
                    listener.close()
                    return
            elif ready is wake_r:
                wake_r.recv(4096)
                with lock:
                    new, pending[:] = list(pending), []
                for conn in new:
                    hub.add(conn)
            else:
                try:
                    data = ready.recv_bytes()
                except (EOFError, OSError):
                    hub.drop(ready)
                    continue
                _, item_ids, campaign_ids = pickle.loads(data)
                if hub.set_ids(ready, item_ids, campaign_ids):
                    due = time.monotonic()               # new ids: read them now
        if not any(hub.ids) or time.monotonic() < due:
            continue
        try:
            hub.refresh()
            if not niced:   # start-up (importing Feast, the first full read) at normal priority: niced
                os.nice(_NICE)      # from the start, servers starting beside it starved it for minutes
                niced = True
            due = time.monotonic() + max(refresh_s, 10 * hub.last_refresh_s)   # never more than ~10 % of a core
        except Exception as exc:  # noqa: BLE001 - report, keep the last values, retry
            hub.fail(f"{type(exc).__name__}: {exc}")
            due = time.monotonic() + refresh_s
