"""Item and campaign statistics reach the request path through one refresher process on
the real Feast SQLite online store: the direct read equals ``get_online_features``, two
subscribers share one hub and both see every row and every later change, a subscriber
that joins late gets the rows already read, and a hub that goes away is reported. Between
full reads the hub reads only the rows written since (incremental reads): they equal
what a full read returns, leave out ids nobody wants, and deletions still arrive with
the next full read."""

from __future__ import annotations

import pickle
import sqlite3
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def _write(settings, view_name: str, rows: dict[str, int], ts: datetime | None = None) -> None:
    """One online row per id; ``impressions_24h`` = the given number, ``ctr_24h`` derived,
    the 1 h counts left null (the request path must not see nulls); event time ``ts`` (now)."""
    import pandas as pd

    from features import TIMESTAMP_FIELD, VIEWS_BY_NAME, open_store

    view = VIEWS_BY_NAME[view_name]
    ts = pd.Timestamp(ts or datetime.now(timezone.utc))
    frame = []
    for entity, n in rows.items():
        row = {view.entity: entity, TIMESTAMP_FIELD: ts}
        row.update({name: None for name, _ in view.fields})
        row.update(impressions_24h=n, clicks_24h=n // 10, ctr_24h=(n // 10) / n)
        frame.append(row)
    open_store(settings).write_to_online_store(view_name, pd.DataFrame(frame))


def _until(check, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_direct_read_equals_get_online_features(serving_settings):
    from features import VIEWS_BY_NAME, open_store
    from serving._stats_reader import ItemStatsReader

    _write(serving_settings, "item_stats", {"st-a": 100, "st-b": 250})
    _write(serving_settings, "campaign_stats", {"st-c1": 40})
    store = open_store(serving_settings)
    reader = ItemStatsReader(store, chunk=2)                 # chunks smaller than the id list
    ids = ("st-a", "st-b", "st-none")
    items = reader.read("item", ids)
    assert set(items) == {"st-a", "st-b"}, "ids without rows are left out"
    assert items["st-a"] == {"item_impressions_24h": 100, "item_clicks_24h": 10, "item_ctr_24h": 0.1}
    refs = [f"item_stats:{n}" for n in VIEWS_BY_NAME["item_stats"].feature_names]
    ref = store.get_online_features(features=refs, entity_rows=[{"item_id": i} for i in ids]).to_dict()
    for j, entity in enumerate(ref["item_id"]):
        want = {f"item_{n}": ref[n][j] for n in ref if n != "item_id" and ref[n][j] is not None}
        assert items.get(entity, {}) == want, entity
    assert reader.read("campaign", ("st-c1",))["st-c1"]["campaign_impressions_24h"] == 40


def test_two_subscribers_share_one_hub_and_see_changes(serving_settings):
    from serving._item_stats import ItemFeatures, ItemStatsHub

    _write(serving_settings, "item_stats", {"hub-a": 100, "hub-b": 200})
    _write(serving_settings, "campaign_stats", {"hub-c": 30})
    ids = (["hub-a", "hub-b", "hub-missing"], ["hub-c"])
    with ItemStatsHub(serving_settings, refresh_s=0.2) as hub:
        first = ItemFeatures(serving_settings, lambda: ids, refresh_s=0.2, hub_address=hub.address).start()
        try:
            _until(lambda: first.refreshes >= 1, what="the first subscriber's first rows")
            assert first.shared
            mine = os.getpriority(os.PRIO_PROCESS, 0)
            _until(lambda: os.getpriority(os.PRIO_PROCESS, hub.pid) == min(mine + 10, 19),
                   what="the refresher to lower its priority after its first read")
            assert first.item("hub-a")["item_impressions_24h"] == 100
            assert first.campaign("hub-c")["campaign_impressions_24h"] == 30
            assert first.item("hub-missing") == {}
            # a catalog's statistics as columns: rows 0-1 are ads of campaign hub-c, row 2 a product
            columns = first.columns(3, {"hub-a": 0, "hub-b": 2, "hub-missing": 1}, [(0, "hub-c"), (1, "hub-c")])
            np.testing.assert_array_equal(columns.get("item_impressions_24h", np.arange(3)), [100, 0, 200])
            np.testing.assert_array_equal(columns.get("campaign_impressions_24h", np.arange(3)), [30, 30, 0])
            # a late subscriber gets the rows already read, without waiting for the next read
            late = ItemFeatures(serving_settings, lambda: ids, refresh_s=60.0, hub_address=hub.address).start()
            try:
                _until(lambda: late.refreshes >= 1, timeout_s=5.0, what="the late subscriber's rows")
                assert late.item("hub-b")["item_impressions_24h"] == 200
                _write(serving_settings, "item_stats", {"hub-b": 900})
                for sub in (first, late):
                    _until(lambda: sub.item("hub-b").get("item_impressions_24h") == 900, what="the change")
                _until(lambda: columns.values["item_impressions_24h"][2] == 900, what="the columns to follow")
                assert late.item("hub-a")["item_impressions_24h"] == 100, "unchanged rows stay"
            finally:
                late.stop()
        finally:
            first.stop()
        assert hub.pid is not None
    assert hub.pid is None, "stopped"


def test_a_subscriber_without_a_hub_starts_its_own_and_reports_when_it_is_gone(serving_settings):
    from serving._item_stats import ItemFeatures

    _write(serving_settings, "item_stats", {"own-a": 50})
    own = ItemFeatures(serving_settings, lambda: (["own-a"], []), refresh_s=0.2).start()
    try:
        assert not own.shared
        _until(lambda: own.item("own-a").get("item_impressions_24h") == 50, what="the own hub's rows")
        own._own_hub._proc.kill()                            # the refresher dies
        _until(lambda: own.failures >= 1, what="the loss to be counted")
        assert "gone" in own.last_error
        assert own.item("own-a")["item_impressions_24h"] == 50, "the last statistics keep serving"
    finally:
        own.stop()


def test_a_late_subscriber_with_many_ids_gets_a_hub_full_of_rows(serving_settings):
    """Both the hub's rows and the subscriber's id list are larger than a socket buffer:
    the subscriber must read while it sends (start-up of a second server process hung
    when it did not)."""
    import polars as pl

    from features import TIMESTAMP_FIELD, open_store
    from serving._item_stats import ItemFeatures, ItemStatsHub
    from streaming._feast import FeastSink

    n = 20_000
    ids = [f"big-{i:06d}" for i in range(n)]
    counts = list(range(1, n + 1))
    frame = pl.DataFrame({"item_id": ids, TIMESTAMP_FIELD: [datetime.now(timezone.utc)] * n,
                          "impressions_24h": counts, "clicks_24h": [c // 10 for c in counts]},
                         schema_overrides={TIMESTAMP_FIELD: pl.Datetime("us", "UTC")})
    for name in ("impressions_1h", "clicks_1h", "conversions_1h", "conversions_24h", "ctr_1h", "ctr_24h"):
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64 if name.startswith("ctr") else pl.Int64).alias(name))
    FeastSink(open_store(serving_settings), serving_settings.feast_dir).write_online("item_stats", frame)
    wanted = (ids, [])
    with ItemStatsHub(serving_settings, refresh_s=60.0) as hub:
        first = ItemFeatures(serving_settings, lambda: wanted, refresh_s=60.0, hub_address=hub.address).start()
        try:
            _until(lambda: first.refreshes >= 1, timeout_s=60.0, what="the first subscriber's rows")
            late = ItemFeatures(serving_settings, lambda: wanted, refresh_s=60.0, hub_address=hub.address)
            started = threading.Thread(target=late.start, daemon=True)
            started.start()
            started.join(30.0)
            try:
                assert not started.is_alive(), "the late subscriber hung while sending its ids"
                _until(lambda: late.refreshes >= 1, timeout_s=30.0, what="the late subscriber's rows")
                assert late.item(ids[-1])["item_impressions_24h"] == n
                assert sum(1 for i in ids if late.item(i)) == n, "every row arrived"
            finally:
                late.stop()
        finally:
            first.stop()


def _delete(settings, view_name: str, entity: str) -> None:
    """Remove an id's rows from the SQLite online table, as retention would."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from features import VIEWS_BY_NAME, open_store
    from streaming._feast import FeastSink

    store = open_store(settings)
    entity_key = EntityKey(join_keys=[VIEWS_BY_NAME[view_name].entity], entity_values=[Value(string_val=entity)])
    version = store.config.entity_key_serialization_version
    key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
    table = FeastSink(store, None).sqlite_table(view_name)
    with sqlite3.connect(store._get_provider().online_store._get_db_path(store.config)) as conn:
        deleted = conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))
        assert deleted.rowcount > 0, f"no rows of {entity} to delete"
    conn.close()


def _types(rows: dict[str, dict]) -> dict:
    return {entity: {k: type(v) for k, v in row.items()} for entity, row in rows.items()}


def test_an_incremental_read_returns_the_rows_written_since_as_a_full_read_would(serving_settings):
    from features import open_store
    from serving._stats_reader import ItemStatsReader

    old = datetime.now(timezone.utc) - timedelta(minutes=2)
    _write(serving_settings, "item_stats", {"inc-a": 100, "inc-b": 200}, ts=old)
    _write(serving_settings, "item_stats", {"inc-later": 5}, ts=old + timedelta(minutes=1))  # the newest seen: 1 min on
    reader = ItemStatsReader(open_store(serving_settings), full_every=100, overlap_s=10)
    ids = ("inc-a", "inc-b", "inc-c")
    first = reader.changes("item", ids)
    assert first.full and set(first.rows) == {"inc-a", "inc-b"}
    assert first.rows == reader.read("item", ids)
    nothing = reader.changes("item", ids)
    assert not nothing.full and nothing.rows == {}, "nothing written since the full read"

    _write(serving_settings, "item_stats", {"inc-a": 150, "inc-c": 300})      # a changed value, a new id
    later = reader.changes("item", ids)
    assert not later.full
    assert set(later.rows) == {"inc-a", "inc-c"}, "inc-b was not written since: not read again"
    full = reader.read("item", ids)
    assert later.rows == {k: full[k] for k in later.rows}
    assert _types(later.rows) == _types({k: full[k] for k in later.rows}), "ints stay int, floats float"
    assert later.rows["inc-a"] == {"item_impressions_24h": 150, "item_clicks_24h": 15, "item_ctr_24h": 0.1}


def test_a_late_events_row_arrives_with_the_next_incremental_read(serving_settings):
    """An ingest worker that lags writes a row whose event time is minutes older than the
    newest one seen: its write time (``created_ts``) still makes it new to the refresher."""
    import polars as pl

    from features import TIMESTAMP_FIELD, VIEWS_BY_NAME, open_store
    from serving._stats_reader import ItemStatsReader
    from streaming import FeastSink

    _write(serving_settings, "item_stats", {"late-a": 100})                   # event time now
    store = open_store(serving_settings)
    reader = ItemStatsReader(store, full_every=100, overlap_s=10)
    ids = ("late-a", "late-b")
    assert reader.changes("item", ids).full
    view = VIEWS_BY_NAME["item_stats"]
    row = {view.entity: ["late-b"], TIMESTAMP_FIELD: [datetime.now(timezone.utc) - timedelta(minutes=5)]}
    row.update({name: [None] for name, _ in view.fields})
    row.update(impressions_24h=[40], clicks_24h=[4], ctr_24h=[0.1])
    frame = pl.DataFrame(row).with_columns(pl.col(TIMESTAMP_FIELD).cast(pl.Datetime("us", "UTC")),
                                           *[pl.col(n).cast(pl.Int64) for n in ("impressions_24h", "clicks_24h")])
    FeastSink(store, serving_settings.feast_dir).write_online("item_stats", frame.select(
        [view.entity, TIMESTAMP_FIELD, *[n for n, _ in view.fields]]))
    later = reader.changes("item", ids)
    assert not later.full
    assert "late-b" in later.rows, "a row 5 minutes late in event time waited for the next full read"
    assert later.rows["late-b"]["item_impressions_24h"] == 40


def test_an_incremental_read_ignores_ids_nobody_wants(serving_settings):
    from features import open_store
    from serving._stats_reader import ItemStatsReader

    _write(serving_settings, "item_stats", {"want-a": 10})
    reader = ItemStatsReader(open_store(serving_settings), full_every=100)
    ids = ("want-a",)
    assert reader.changes("item", ids).full
    _write(serving_settings, "item_stats", {"want-a": 20, "want-stranger": 30})
    later = reader.changes("item", ids)
    assert not later.full
    assert set(later.rows) == {"want-a"}
    assert later.rows["want-a"]["item_impressions_24h"] == 20


class _Subscriber:
    """The hub's end of a subscriber: keeps the ``(id, row)`` changes sent, per refresh."""

    def __init__(self) -> None:
        self.refreshes: list[dict] = [{}]

    def send_bytes(self, blob: bytes) -> None:
        kind, *rest = pickle.loads(blob)
        if kind == "rows":
            self.refreshes[-1].update(rest[1])
        elif kind == "done":
            self.refreshes.append({})

    def close(self) -> None:
        pass


def test_a_full_read_every_n_reads_propagates_deletions(serving_settings):
    from features import open_store
    from serving._item_stats import ItemStatsReader, _Hub

    _write(serving_settings, "item_stats", {"del-a": 10, "del-b": 20})
    store = open_store(serving_settings)
    hub = _Hub(lambda: ItemStatsReader(store, full_every=3), slice_rows=100)
    sub = _Subscriber()
    hub.add(sub)
    hub.set_ids(sub, ("del-a", "del-b"), ())
    hub.refresh()                                            # 1: full
    assert set(sub.refreshes[0]) == {"del-a", "del-b"}
    _delete(serving_settings, "item_stats", "del-a")
    _write(serving_settings, "item_stats", {"del-b": 21})
    hub.refresh()                                            # 2: incremental
    assert sub.refreshes[1] == {"del-b": hub.rows["item"]["del-b"]}, "only the changed row is sent"
    assert hub.rows["item"]["del-b"]["item_impressions_24h"] == 21
    assert "del-a" in hub.rows["item"], "an incremental read does not see deletions"
    hub.refresh()                                            # 3: incremental, nothing new
    assert sub.refreshes[2] == {}
    hub.refresh()                                            # 4: full: the deletion arrives
    assert sub.refreshes[3] == {"del-a": None}
    assert set(hub.rows["item"]) == {"del-b"}


def test_a_failing_incremental_read_falls_back_to_a_full_read(serving_settings, monkeypatch):
    from features import open_store
    from serving import _stats_reader
    from serving._stats_reader import ItemStatsReader

    _write(serving_settings, "item_stats", {"fail-a": 10, "fail-b": 20})
    reader = ItemStatsReader(open_store(serving_settings), full_every=100)
    ids = ("fail-a", "fail-b")
    assert reader.changes("item", ids).full

    def broken(self):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_stats_reader._SqliteChanges, "read", broken)
    _write(serving_settings, "item_stats", {"fail-a": 11})
    read = reader.changes("item", ids)
    assert read.full, "the failure is answered with a full read"
    assert read.rows == reader.read("item", ids) and read.rows["fail-a"]["item_impressions_24h"] == 11
    monkeypatch.undo()
    _write(serving_settings, "item_stats", {"fail-b": 21})
    later = reader.changes("item", ids)
    assert not later.full, "incremental again once it works"
    assert later.rows["fail-b"]["item_impressions_24h"] == 21


def test_the_incremental_decode_equals_feasts_conversion():
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value
    from feast.type_map import feast_value_type_to_python_type
    from feast.value_type import ValueType

    from serving._stats_reader import _value_decoder

    cases = {
        "s": (ValueType.STRING, Value(string_val="x\u00e9")), "i": (ValueType.INT64, Value(int64_val=-7)),
        "i32": (ValueType.INT32, Value(int32_val=3)), "d": (ValueType.DOUBLE, Value(double_val=2.0)),
        "f": (ValueType.FLOAT, Value(float_val=0.5)), "b": (ValueType.BOOL, Value(bool_val=True)),
        "by": (ValueType.BYTES, Value(bytes_val=b"\x00z")),
        "sl": (ValueType.STRING_LIST, Value(string_list_val=StringList(val=["a", "b"]))),
        "il": (ValueType.INT64_LIST, Value(int64_list_val=Int64List(val=[3, 2]))),
        "dl": (ValueType.DOUBLE_LIST, Value(double_list_val=DoubleList(val=[1.0, 0.25]))),
        "empty_list": (ValueType.INT64_LIST, Value(int64_list_val=Int64List())),
        "null": (ValueType.INT64, Value()),
        "ts": (ValueType.UNIX_TIMESTAMP, Value(unix_timestamp_val=1_700_000_000)),
        "uuid": (ValueType.UUID, Value(string_val="12345678-1234-5678-1234-567812345678")),
    }
    decode = _value_decoder({name: t for name, (t, _) in cases.items()})
    for name, (t, value) in cases.items():
        got, want = decode(name, value.SerializeToString()), feast_value_type_to_python_type(value, t)
        assert got == want and type(got) is type(want), name
