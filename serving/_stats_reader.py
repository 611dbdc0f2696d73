"""Reading the item and campaign statistics from the Feast online store, in the refresher.

``ItemStatsReader.read`` reads every wanted id through the provider's ``online_read``;
``changes`` (the refresher's periodic read) reads on Feast's SQLite online table only the
rows written since its previous call (``_SqliteChanges``), and falls back to full reads
on any other store or layout. Split from ``serving._item_stats`` (the refresher process
and its subscribers), which imports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger(__name__)

VIEWS: tuple[tuple[str, str, str], ...] = (("item", "item_stats", "item"), ("campaign", "campaign_stats", "campaign"))
"""(kind, feature view, entity) of the statistics the request path reads; rows are keyed
``<kind>_<feature>`` as ``FeatureStore.get_online_features`` would name them."""


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
        with a feature row stamped at least the largest stamp seen so far (never later than
        now) minus ``overlap_s``, and nothing at all when nothing was committed to the
        database since the previous read (``PRAGMA data_version``). A row's stamp is its
        ``created_ts`` — the time Sightline's writers (``streaming``) wrote it, so a late
        event's row (a lagging ingest worker, a replay) is new here although its event time
        is old — or, for rows written without one (Feast's own ``write_to_online_store`` and
        materialization), its ``event_ts``.

        Bounds: a row without ``created_ts`` written with an event time more than
        ``overlap_s`` older than the newest stamp seen, and a deleted row (retention,
        erasure), reach the caller only with the next full read: within ``full_every`` reads
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
            missing = sorted({"entity_key", "feature_name", "value", "event_ts", "created_ts"} - columns)
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


class _SqliteChanges:
    """The incremental read of one view in Feast's SQLite online table (``ItemStatsReader.changes``).

    The table has a row per (entity, feature): ``entity_key`` (the serialized key:
    ``streaming._online_rows.entity_key_prefix`` + 4-byte little-endian length + utf-8 id),
    ``feature_name``, ``value`` (a serialized ``feast.types.Value``), ``event_ts`` (the row's
    event time in epoch seconds, as Feast's sqlite3 adapter stores a naive UTC time, the
    same as ``SqliteRowEncoder`` writes) and ``created_ts`` (the write time in the same unit
    from ``FeastSink``; null from Feast's ``write_to_online_store``). A row's stamp is
    ``COALESCE(created_ts, event_ts)``. No index covers it: a read scans the table in SQLite
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
        self._changed_sql = (f'SELECT entity_key, feature_name, value, COALESCE(created_ts, event_ts) FROM "{table}" '
                             f'WHERE entity_key IN (SELECT entity_key FROM "{table}" '
                             'WHERE COALESCE(created_ts, event_ts) >= ?)')
        self.ids: Sequence[str] | None = None    # the ids of the last full read; None: the next read is full
        self.reads_since_full = 0
        self._wanted: dict[bytes, str] = {}      # serialized key → id, of ``ids``
        self._latest = 0                         # the largest stamp seen
        self._version = -1                       # data_version at the previous read
        self._full_version = -1                  # data_version at the last full read

    def _data_version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def mark(self) -> tuple[int, int]:
        """(data version, largest stamp) now, taken just before a full read."""
        version = self._data_version()
        (latest,) = self._conn.execute(f'SELECT MAX(COALESCE(created_ts, event_ts)) FROM "{self._table}"').fetchone()
        if latest is not None and type(latest) is not int:
            raise _LayoutChanged(f"created_ts / event_ts of {self._table} hold {type(latest).__name__} values, "
                                 "not epoch seconds")
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
        from streaming._online_rows import write_stamp     # now as the store stamps rows

        since = min(self._latest, write_stamp()) - self._overlap_s   # one row stamped in the future must not stop reads
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
