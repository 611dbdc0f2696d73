"""Item and campaign statistics reach the request path through one refresher process on
the real Feast SQLite online store: the direct read equals ``get_online_features``, two
subscribers share one hub and both see every row and every later change, a subscriber
that joins late gets the rows already read, and a hub that goes away is reported."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

pytestmark = pytest.mark.integration


def _write(settings, view_name: str, rows: dict[str, int]) -> None:
    """One online row per id; ``impressions_24h`` = the given number, ``ctr_24h`` derived,
    the 1 h counts left null (the request path must not see nulls)."""
    import pandas as pd

    from features import TIMESTAMP_FIELD, VIEWS_BY_NAME, open_store

    view = VIEWS_BY_NAME[view_name]
    ts = pd.Timestamp(datetime.now(timezone.utc))
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
    from serving._item_stats import ItemStatsReader

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
            assert first.item("hub-a")["item_impressions_24h"] == 100
            assert first.campaign("hub-c")["campaign_impressions_24h"] == 30
            assert first.item("hub-missing") == {}
            # a late subscriber gets the rows already read, without waiting for the next read
            late = ItemFeatures(serving_settings, lambda: ids, refresh_s=60.0, hub_address=hub.address).start()
            try:
                _until(lambda: late.refreshes >= 1, timeout_s=5.0, what="the late subscriber's rows")
                assert late.item("hub-b")["item_impressions_24h"] == 200
                _write(serving_settings, "item_stats", {"hub-b": 900})
                for sub in (first, late):
                    _until(lambda: sub.item("hub-b").get("item_impressions_24h") == 900, what="the change")
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
