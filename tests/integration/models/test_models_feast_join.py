"""The Feast point-in-time join of the training set: strictly before each impression."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pytest

from features import VIEWS_BY_NAME, open_store, write_offline
from models import feast_features

pytestmark = pytest.mark.integration


def _rows(view: str, key: str, ts, **values):
    spec = VIEWS_BY_NAME[view]
    row = {spec.entity: key, "event_timestamp": ts}
    for name, typ in spec.fields:
        row[name] = values.get(name, [] if typ.startswith("Array") else (0.0 if typ.startswith("Float") else 0))
    return pd.DataFrame([row])


def test_feast_join_uses_only_values_written_before_the_impression(feast_settings):
    store = open_store(feast_settings)
    t0 = pd.Timestamp("2026-11-01T10:00:00Z")
    t_imp = t0 + pd.Timedelta(hours=1)
    d = feast_settings.feast_dir
    write_offline(d, "item_stats", _rows("item_stats", "i1", t0, impressions_24h=100, clicks_24h=3))
    # a value stamped exactly at the impression time and one after it: both are the future
    write_offline(d, "item_stats", _rows("item_stats", "i1", t_imp, impressions_24h=999, clicks_24h=99))
    write_offline(d, "item_stats", _rows("item_stats", "i1", t_imp + pd.Timedelta(minutes=5), impressions_24h=5000))
    write_offline(d, "user_engagement", _rows("user_engagement", "u1", t0, clicks_7d=7, impressions_7d=70,
                                              engaged_categories_7d=["sports/running_shoes"],
                                              engaged_category_clicks_7d=[4]))
    write_offline(d, "context_popularity", _rows("context_popularity", "gym|sports/running_shoes", t0,
                                                 events_24h=40, clicks_24h=2))
    imps = pl.DataFrame({
        "event_id": ["e1", "e2"], "event_time": [t_imp.to_pydatetime()] * 2, "user_id": ["u1", "u1"],
        "item_id": ["i1", "i1"], "campaign_id": ["c1", "c1"], "scene": ["gym", "gym"],
        "category": ["sports/running_shoes"] * 2, "click": [0, 1], "consent_personalization": [True, False],
    })
    got = feast_features(store, imps).sort("event_id")
    assert got["item_impressions_24h"].to_list() == [100, 100]
    assert got["item_clicks_24h"].to_list() == [3, 3]
    assert got["ctx_events_24h"].to_list() == [40, 40]
    # user features only under personalization consent
    assert got["user_clicks_7d"].to_list() == [7, 0]
    assert got["user_category_clicks_7d"].to_list() == [4, 0]
