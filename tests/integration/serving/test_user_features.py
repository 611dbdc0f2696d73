"""Serving's per-request user read (the provider's ``online_read``, views resolved once)
answers exactly what ``FeatureStore.get_online_features`` answers, on the real Feast
SQLite online store: full rows, partial rows (nulls left out), other users, no rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

pytestmark = pytest.mark.integration


def _value(feast_type: str, i: int):
    if feast_type.startswith("Array("):
        inner = feast_type[6:-1]
        return [_value(inner, i), _value(inner, i + 3)]
    return {"String": f"v{i}", "Int64": i, "Int32": i, "Float64": i + 0.5, "Float32": i + 0.25}[feast_type]


def test_the_direct_read_equals_get_online_features(serving_settings):
    import pandas as pd

    from features import TIMESTAMP_FIELD, VIEWS_BY_NAME, open_store
    from serving._features import USER_VIEWS, UserFeatures

    store = open_store(serving_settings)
    ts = pd.Timestamp(datetime.now(timezone.utc))
    for n, (view_name, _) in enumerate(USER_VIEWS):
        view = VIEWS_BY_NAME[view_name]
        rows = []
        for i, user in enumerate(["uf-full", "uf-other"]):
            row = {view.entity: user, TIMESTAMP_FIELD: ts}
            row.update({name: _value(t, 10 * i + n + j) for j, (name, t) in enumerate(view.fields)})
            rows.append(row)
        if view_name == "user_engagement":      # a user with only some fields set
            partial = {view.entity: "uf-partial", TIMESTAMP_FIELD: ts}
            partial.update({name: None for name, _ in view.fields})
            partial["impressions_24h"] = 7
            rows.append(partial)
        store.write_to_online_store(view_name, pd.DataFrame(rows))

    features = UserFeatures(lambda: open_store(serving_settings))
    assert features.get_via_feature_store("uf-full"), "rows written"
    full = features.get("uf-full")
    assert len(full) == sum(len(VIEWS_BY_NAME[v].fields) for v, _ in USER_VIEWS), full
    assert full["user_impressions_1h"] == _value("Int64", 1)
    assert isinstance(full["user_recent_scenes"], list) and full["user_recent_scenes"] == ["v0", "v3"]
    assert features.get("uf-partial") == {"user_impressions_24h": 7}
    assert features.get("uf-nobody") == {}
    for user in ("uf-full", "uf-other", "uf-partial", "uf-nobody"):
        assert features.get(user) == features.get_via_feature_store(user), user
    assert features.get("uf-other") != full
