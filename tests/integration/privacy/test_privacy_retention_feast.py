"""Retention against the real Feast stores: purge removes expired online and offline rows
and Feast still reads what is left (point-in-time retrieval, online reads)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from privacy import purge_expired

pytestmark = pytest.mark.integration


def test_purge_expires_online_and_offline_rows_and_feast_still_reads(feast_settings, privacy_kit):
    import pandas as pd

    from features import VIEWS_BY_NAME, open_store, write_offline

    s = feast_settings
    store = open_store(s)
    view = VIEWS_BY_NAME["user_engagement"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    old, new = now - timedelta(days=40), now - timedelta(hours=1)
    store.write_to_online_store(view.name, privacy_kit.view_frame(view, ["gone-user"], old))
    store.write_to_online_store(view.name, privacy_kit.view_frame(view, ["kept-user"], new))
    write_offline(s.feast_dir, view.name, privacy_kit.view_frame(view, ["gone-user"], old))
    write_offline(s.feast_dir, view.name, privacy_kit.view_frame(view, ["kept-user"], new))
    db = s.feast_dir / "online.db"
    table = f"{s.feast.project}_{view.name}"
    assert sqlite3.connect(db).execute(f'SELECT count(DISTINCT entity_key) FROM "{table}"').fetchone()[0] == 2

    report = purge_expired(s)
    by_store = {name: rows for name, _, rows, _, _ in report.stores}
    assert by_store["feast_online_sqlite:user views"] == len(view.fields)
    assert by_store[f"feast_offline:{view.name}"] == 1

    con = sqlite3.connect(db)
    assert con.execute(f'SELECT count(DISTINCT entity_key) FROM "{table}"').fetchone()[0] == 1
    con.close()
    feature = f"{view.name}:{view.feature_names[0]}"
    online = store.get_online_features(features=[feature], entity_rows=[{"user_id": "kept-user"}]).to_dict()
    assert online[view.feature_names[0]][0] is not None

    # Feast still reads the rewritten offline directory (point-in-time join of the kept row);
    # (its file store cannot join an entity without any row, so the purged one is checked on disk)
    entity_df = pd.DataFrame({"user_id": ["kept-user"], "event_timestamp": [now]})
    hist = store.get_historical_features(entity_df=entity_df, features=[feature]).to_df()
    assert hist[view.feature_names[0]].notna().all()
    import pyarrow.parquet as pq

    from features import offline_dir

    ids = [u for p in offline_dir(s.feast_dir, view.name).glob("part-*.parquet")
           for u in pq.read_table(p, columns=["user_id"]).column(0).to_pylist()]
    assert ids == ["kept-user"]
