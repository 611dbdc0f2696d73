"""Writes computed feature rows to Feast (online and offline) and erases users online.

Online rows are value protos built from polars columns. On the SQLite online store
they are written with one ``executemany`` into Feast's own table (same entity-key
encoding, value protos and timestamps as its ``online_write_batch``, which issues
one statement per feature value); other stores get the provider's
``online_write_batch``. Both skip ``write_to_online_store``'s pandas → arrow → proto
round trip; bench/ingest.py measures that path as the baseline, and the tests read
everything back through ``FeatureStore.get_online_features``.
Offline rows go to ``features.write_offline`` (one parquet part per view per flush).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Protocol

import polars as pl

from features import TIMESTAMP_FIELD, VIEWS, VIEWS_BY_NAME, write_offline
from streaming._online_rows import SqliteRowEncoder, entity_key_prefix, upsert_sql

log = logging.getLogger(__name__)


def value_builder(type_name: str):
    """A function: Python value → ``feast Value`` proto (the provider path: Redis, the tests' reference)."""
    from feast.protos.feast.types.Value_pb2 import DoubleList, Value

    if type_name == "String":
        return lambda v: Value(string_val=v) if v is not None else Value()
    if type_name == "Int64":
        return lambda v: Value(int64_val=v) if v is not None else Value()
    if type_name in ("Float64", "Float32"):
        return lambda v: Value(double_val=v) if v is not None else Value()
    if type_name == "Array(String)":
        def strings(v):
            out = Value()
            out.string_list_val.val.extend(v or ())
            return out
        return strings
    if type_name == "Array(Int64)":
        def ints(v):
            out = Value()
            out.int64_list_val.val.extend(v or ())
            return out
        return ints
    if type_name == "Array(Float64)":
        return lambda v: Value(double_list_val=DoubleList(val=v or ()))
    raise ValueError(f"no online encoder for feast type {type_name}; add one in streaming/_feast.py")


def drop_redundant_index(conn, table: str) -> bool:
    """Drop Feast's ``<table>_ek`` index on ``entity_key`` when the table's primary key
    (``entity_key, feature_name``) already indexes that prefix; True if dropped.

    Every upsert maintains each b-tree of the table: the table, its primary key and this
    index, which no read needs (Feast reads by ``entity_key``, which the primary key serves).
    Without it an online upsert costs about a third less (bench.ingest). ``feast apply``
    recreates it; the next worker start drops it again."""
    indexes = {row[1]: row for row in conn.execute(f'PRAGMA index_list("{table}")')}
    name = f"{table}_ek"
    has_pk = any(row[3] == "pk" and [c[2] for c in conn.execute(f'PRAGMA index_info("{idx}")')][:1] == ["entity_key"]
                 for idx, row in indexes.items())
    if name not in indexes or not has_pk:
        return False
    conn.execute(f'DROP INDEX IF EXISTS "{name}"')
    return True


class FeatureSink(Protocol):
    """Where feature rows go; ``FeastSink`` is the real one, tests may inject a fake."""

    def write_online(self, view: str, rows: pl.DataFrame) -> None: ...
    def write_offline(self, view: str, rows: pl.DataFrame) -> None: ...
    def delete_users(self, user_ids: list[str]) -> None: ...


class FeastSink:
    """The real sink on a ``feast.FeatureStore`` (SQLite or Redis online store).

    ``background=True`` (what ``IngestWorker`` uses): on the SQLite online store, ``start``
    launches a writer process (``streaming._online_writer``) and online writes and deletes
    are queued to it in order; ``sync`` waits until they are committed (the worker calls
    it before committing offsets). Otherwise every write is done before the call returns."""

    def __init__(self, store, feast_dir, mode: str = "direct", *, background: bool = False) -> None:
        self._store = store
        self._feast_dir = feast_dir
        self._mode = mode
        self._background = background
        self._writer = None
        self._views = {}
        self._builders = {v.name: [(n, value_builder(t)) for n, t in v.fields] for v in VIEWS}
        self._bulk: bool | None = None
        self._encoder: SqliteRowEncoder | None = None
        self._wal = False

    def _view(self, name: str):
        if name not in self._views:
            self._views[name] = self._store.get_feature_view(name)
        return self._views[name]

    def _sqlite_bulk(self) -> bool:
        """True when rows can go to Feast's SQLite online table in one executemany."""
        if self._bulk is None:
            store_cfg = self._store.config.online_store
            self._bulk = (self._mode == "direct" and getattr(store_cfg, "type", "sqlite") == "sqlite"
                          and not getattr(store_cfg, "vector_enabled", False)
                          and not getattr(store_cfg, "enable_openai_compatible_store", False))
        return self._bulk

    def write_online(self, view: str, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        if self._mode == "feast":   # the library path, kept as the benchmark baseline
            self._store.write_to_online_store(view, rows.to_pandas())
            return
        if self._writer is not None and VIEWS_BY_NAME[view].user_keyed:
            # user rows only: a user's events are on one partition, so one worker (and its writer)
            # writes them at a time, in order. Item, campaign and scene x category rows are shared
            # by every worker on the host; written inline, right after the state commit, as before
            # (queued, a worker's older row could land after another worker's newer one).
            self._writer.write(view, rows)
            return
        if self._sqlite_bulk():
            self._execute_sqlite(self.sqlite_table(view), self.row_encoder().rows(view, rows))
            return
        spec = VIEWS_BY_NAME[view]
        keys = rows[spec.entity].to_list()
        stamps = rows[TIMESTAMP_FIELD].dt.replace_time_zone(None).to_list()   # naive UTC, as Feast stores them
        columns = [(name, list(map(build, rows[name].to_list()))) for name, build in self._builders[view]]
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        created = datetime.now(timezone.utc).replace(tzinfo=None)   # the write time: what the stats refresher watches
        data = [(EntityKey(join_keys=[spec.entity], entity_values=[Value(string_val=key)]),
                 {name: values[i] for name, values in columns}, stamps[i], created) for i, key in enumerate(keys)]
        self._store._get_provider().online_write_batch(self._store.config, self._view(view), data, progress=None)

    # -- the background writer ---------------------------------------------------------
    def start(self, recompute=None) -> None:
        """Start the writer process if ``background`` and the online store is SQLite (else a no-op).

        ``recompute`` (a ``streaming._online_writer.Recompute``): the child also computes the
        user-keyed views' rows from the state store and writes their offline parts, so the
        bucket reads and polars work of the largest views run on the other core."""
        if not self._background or self._writer is not None or not self._sqlite_bulk():
            return
        self._sqlite_conn()   # tuned before the child opens the file
        encoder = self.row_encoder()
        if any(p is None for p in encoder.key_prefixes.values()):
            log.warning("Feast's entity-key layout is not the one the writer process encodes; writing online inline")
            return
        from streaming._online_writer import OnlineWriter

        self._writer = OnlineWriter(self._store._get_provider().online_store._get_db_path(self._store.config),
                                    {v.name: self.sqlite_table(v.name) for v in VIEWS},
                                    {v.name: v.fields for v in VIEWS}, {v.name: v.entity for v in VIEWS},
                                    encoder.key_prefixes, recompute=recompute)

    def recomputes(self, view: str) -> bool:
        """True when the writer process computes ``view``'s rows itself (``recompute`` then, not ``write_online``)."""
        return self._writer is not None and self._writer.recomputes and VIEWS_BY_NAME[view].user_keyed

    def recompute(self, view: str, code: str, entities: list[str]) -> None:
        self._writer.recompute(view, code, entities)

    def flush_offline(self) -> dict[str, int]:
        """Write the offline rows the writer process buffered (rows per view); {} without one."""
        return {} if self._writer is None or not self._writer.recomputes else self._writer.flush_offline()

    @property
    def submitted(self) -> int:
        """Sequence number of the latest queued online write (0 without a writer process)."""
        return 0 if self._writer is None else self._writer.submitted

    def acknowledged(self) -> tuple[int, float]:
        """(latest committed sequence number, its commit time); without a writer everything is committed now."""
        import time

        return (0, time.time()) if self._writer is None else self._writer.acknowledged()

    def sync(self) -> tuple[int, float]:
        """Wait until every queued online write and delete is committed."""
        import time

        return (0, time.time()) if self._writer is None else self._writer.sync()

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def _serialize_key(self, join_key: str, value: str) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)]),
                                    entity_key_serialization_version=self._store.config.entity_key_serialization_version)

    def row_encoder(self) -> SqliteRowEncoder:
        """The encoder of this store's SQLite online rows (key layout probed on Feast's own serializer)."""
        if self._encoder is None:
            joins = {v.entity for v in VIEWS}
            prefixes = {j: entity_key_prefix(lambda value, j=j: self._serialize_key(j, value)) for j in joins}
            self._encoder = SqliteRowEncoder({v.name: v.fields for v in VIEWS}, {v.name: v.entity for v in VIEWS},
                                             prefixes, self._serialize_key)
        return self._encoder

    def sqlite_table(self, view: str) -> str:
        """The name of Feast's SQLite online table of ``view``."""
        from feast.infra.online_stores.sqlite import _table_id

        config = self._store.config
        return _table_id(config.project, self._view(view), getattr(config.registry, "enable_online_feature_view_versioning", False))

    def _execute_sqlite(self, table: str, params: list[tuple]) -> None:
        """The rows Feast's SQLite store would write (same table, key encoding, value protos), in one statement."""
        conn = self._sqlite_conn()
        with conn:
            conn.executemany(upsert_sql(table), params)

    def _sqlite_conn(self):
        """Feast's SQLite connection, tuned once: WAL (readers such as serving never block on the
        writer, and a commit needs no fsync of the main file; it persists in the file) and
        without Feast's redundant ``<table>_ek`` index."""
        conn = self._store._get_provider().online_store._get_conn(self._store.config)
        if not self._wal:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")   # the writer process may hold the write lock a moment
            for view in VIEWS:
                drop_redundant_index(conn, self.sqlite_table(view.name))
            self._wal = True
        return conn

    def write_offline(self, view: str, rows: pl.DataFrame) -> None:
        if rows.height:
            write_offline(self._feast_dir, view, rows)

    def delete_users(self, user_ids: list[str]) -> None:
        """Delete the online rows of every user-keyed view for ``user_ids``.

        Feast has no per-entity delete, so this speaks to the configured online store:
        SQLite rows by serialized entity key, or the user's Redis hash (which holds the
        user-keyed views only: every user-keyed view is keyed by ``user_id``).
        """
        if not user_ids:
            return
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        config = self._store.config
        version = config.entity_key_serialization_version
        keys = [EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=u)]) for u in user_ids]
        online_type = getattr(config.online_store, "type", "sqlite")
        user_views = [v for v in VIEWS if v.user_keyed]
        if online_type == "redis":
            import redis
            from feast.infra.online_stores.helpers import _redis_key

            host, _, port = config.online_store.connection_string.split(",")[0].partition(":")
            client = redis.Redis(host=host, port=int(port or 6379))
            client.delete(*[_redis_key(config.project, k, entity_key_serialization_version=version) for k in keys])
            return
        from feast.infra.online_stores.sqlite import _table_id

        provider = self._store._get_provider()
        conn = provider.online_store._get_conn(config)
        blobs = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
        if self._writer is not None:   # in order with the writes queued before it
            self._writer.delete([(self.sqlite_table(spec.name), blobs) for spec in user_views], user_ids)
            return
        with conn:
            for spec in user_views:
                table = _table_id(config.project, self._view(spec.name),
                                  getattr(config.registry, "enable_online_feature_view_versioning", False))
                conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', [(b,) for b in blobs])
