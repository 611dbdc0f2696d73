"""The worker's online writes are byte-for-byte what Feast's own SQLite ``online_write_batch`` writes.

Same frames of every view written twice into one applied Feast repo: once through Feast's
provider's ``online_write_batch`` (one statement per cell) and once through
the worker's encoder; every table's rows must be identical, and Feast reads them back."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

pytestmark = pytest.mark.integration


def _frames() -> dict[str, pl.DataFrame]:
    from features import TIMESTAMP_FIELD, VIEWS

    t = [datetime(2026, 11, 30, 12, 0, 1, 900_000, tzinfo=timezone.utc),
         datetime(2026, 11, 30, 12, 5, 59, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)]
    samples = {"String": ["a", "", None], "Int64": [0, 7, None], "Float64": [0.0, 0.25, None],
               "Array(String)": [["gym", "café"], [], None], "Array(Int64)": [[3, 1], [], None],
               "Array(Float64)": [[0.5], [], None]}
    dtypes = {"String": pl.String, "Int64": pl.Int64, "Float64": pl.Float64, "Array(String)": pl.List(pl.String),
              "Array(Int64)": pl.List(pl.Int64), "Array(Float64)": pl.List(pl.Float64)}
    out = {}
    for view in VIEWS:
        cols = {view.entity: pl.Series(["k-1", "ünï-2", "x" * 70]),
                TIMESTAMP_FIELD: pl.Series(t, dtype=pl.Datetime("us", "UTC"))}
        for name, type_name in view.fields:
            cols[name] = pl.Series(samples[type_name], dtype=dtypes[type_name])
        out[view.name] = pl.DataFrame(cols)
    return out


def _table_rows(store, sink, view) -> list[tuple]:
    conn = store._get_provider().online_store._get_conn(store.config)
    return sorted(conn.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts '
                               f'FROM "{sink.sqlite_table(view)}"').fetchall())


def test_encoded_rows_equal_feasts_online_write_batch(feast_settings):
    from features import VIEWS, open_store
    from streaming import FeastSink

    store = open_store(feast_settings)
    ours = FeastSink(store, feast_settings.feast_dir)
    theirs = FeastSink(store, feast_settings.feast_dir)
    theirs._bulk = False                  # the provider's online_write_batch, one statement per cell
    from streaming._online_rows import write_stamp

    for view, frame in _frames().items():
        before = write_stamp()
        theirs.write_online(view, frame)
        expected = _table_rows(store, ours, view)
        assert len(expected) == frame.height * (frame.width - 2)
        conn = store._get_provider().online_store._get_conn(store.config)
        with conn:
            conn.execute(f'DELETE FROM "{ours.sqlite_table(view)}"')
        ours.write_online(view, frame)
        got = _table_rows(store, ours, view)
        after = write_stamp()
        assert [r[:5] for r in got] == [r[:5] for r in expected], view
        # created_ts is the write time (what serving's refresher watches), stored as Feast stores
        # times (epoch seconds; Feast's connection converts them back to naive UTC datetimes)
        stamps = [int(r[5].timestamp()) if hasattr(r[5], "timestamp") else r[5] for r in got + expected]
        assert all(isinstance(s, int) and before <= s <= after for s in stamps), (view, stamps[:3], before, after)
    spec = next(v for v in VIEWS if v.name == "user_context")
    got = store.get_online_features(features=[f"user_context:{n}" for n in spec.feature_names],
                                    entity_rows=[{"user_id": "k-1"}]).to_dict()
    assert got["recent_scenes"] == [["gym", "café"]] and got["context_events_1h"] == [0]


def test_entity_key_prefix_falls_back_when_the_layout_differs():
    from streaming._online_rows import entity_key_prefix

    assert entity_key_prefix(lambda v: b"P" + len(v.encode()).to_bytes(4, "little") + v.encode()) == b"P"
    assert entity_key_prefix(lambda v: b"P" + v.encode() + len(v.encode()).to_bytes(4, "little")) is None
    assert entity_key_prefix(lambda v: v.encode() + b"\x00\x00\x00\x00") is None


@pytest.mark.parametrize("type_name,values", [
    ("String", ["a", "", "café", None]), ("Int64", [0, 7, -3, 300, 2**62, -(2**63), None]),
    ("Float64", [0.0, 0.25, -1e300, None]), ("Array(String)", [["gym", "café"], [], [""], None]),
    ("Array(Int64)", [[3, 1], [], [-1, 0, 300], None]), ("Array(Float64)", [[0.5, -2.0], [], None]),
])
def test_value_bytes_equal_feasts_value_proto(type_name, values):
    """The writer process encodes cells without Feast's protos; Feast must parse exactly what it would write."""
    from streaming._feast import value_builder
    from streaming._online_rows import encode_value

    build = value_builder(type_name)
    for v in values:
        proto = build(v)
        which = proto.WhichOneof("val")
        text = str(getattr(proto, which)) if which in ("string_val", "int64_val", "double_val") else None
        assert encode_value(type_name, v) == (proto.SerializeToString(), text), (type_name, v)
