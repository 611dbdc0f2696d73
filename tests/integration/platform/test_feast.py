"""The real Feast stores of the local profile: SQLite online, parquet offline."""

from __future__ import annotations

import pandas as pd
import pytest

from features import VIEWS, VIEWS_BY_NAME, open_store, render_feature_store_yaml, write_offline

pytestmark = pytest.mark.integration


def _item_rows(ids, ts, clicks):
    n = len(ids)
    return pd.DataFrame({
        "item_id": ids, "event_timestamp": [ts] * n,
        "impressions_1h": [10] * n, "clicks_1h": clicks, "conversions_1h": [0] * n,
        "impressions_24h": [100] * n, "clicks_24h": clicks, "conversions_24h": [0] * n,
        "ctr_1h": [c / 10 for c in clicks], "ctr_24h": [c / 100 for c in clicks],
    })


def test_repo_registers_every_view(feast_settings):
    store = open_store(feast_settings)
    assert {v.name for v in store.list_feature_views()} == {v.name for v in VIEWS}
    assert "sqlite" in (feast_settings.feast_dir / "feature_store.yaml").read_text()


def test_push_then_read_online_and_point_in_time_offline(feast_settings):
    from feast.data_source import PushMode

    store = open_store(feast_settings)
    t0 = pd.Timestamp("2026-11-01T10:00:00Z")
    t1 = t0 + pd.Timedelta(hours=1)
    for ts, clicks in ((t0, [1, 2]), (t1, [5, 6])):
        rows = _item_rows(["i1", "i2"], ts, clicks)
        store.push(VIEWS_BY_NAME["item_stats"].push_source, rows, to=PushMode.ONLINE)
        write_offline(feast_settings.feast_dir, "item_stats", rows)

    online = store.get_online_features(features=["item_stats:clicks_1h"],
                                       entity_rows=[{"item_id": "i1"}, {"item_id": "i2"}, {"item_id": "nope"}]).to_dict()
    assert online["clicks_1h"] == [5, 6, None]

    # As of 10:30 the 11:00 values did not exist yet: the join must return the 10:00 ones.
    entity_df = pd.DataFrame({"item_id": ["i1", "i2"], "event_timestamp": [t0 + pd.Timedelta(minutes=30), t1 + pd.Timedelta(minutes=1)]})
    hist = store.get_historical_features(entity_df=entity_df, features=["item_stats:clicks_1h"]).to_df()
    got = dict(zip(hist["item_id"], hist["clicks_1h"]))
    assert got == {"i1": 1, "i2": 6}


def test_feast_cli_works_on_the_repo(feast_settings):
    import subprocess
    import sys
    from pathlib import Path

    feast = Path(sys.executable).parent / "feast"
    proc = subprocess.run([str(feast), "-c", str(feast_settings.feast_dir), "feature-views", "list"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for view in VIEWS:
        assert view.name in proc.stdout


def test_prod_profile_renders_a_redis_online_store(make_settings):
    settings = make_settings(feast={"online_store": "redis", "redis_url": "127.0.0.1:6380"})
    yaml = render_feature_store_yaml(settings)
    assert "type: redis" in yaml and "127.0.0.1:6380" in yaml
    assert f"key_ttl_seconds: {settings.privacy.retention_days * 86400}" in yaml  # retention on Redis too
