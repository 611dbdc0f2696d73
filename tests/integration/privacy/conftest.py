"""Fixtures for the privacy integration tests: a Feast repo (SQLite online, parquet
offline), event logs and a gRPC server, all holding a victim user and a bystander."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from privacy import pseudonymize


def _value(feast_type: str, i: int):
    if feast_type.startswith("Array("):
        inner = feast_type[6:-1]
        return [_value(inner, i), _value(inner, i + 1)]
    return {"String": f"v{i}", "Int64": i, "Int32": i, "Float64": i + 0.5, "Float32": i + 0.5, "Bool": bool(i % 2)}[feast_type]


def view_frame(view, entity_ids, ts):
    """A pandas frame of ``view`` rows, one per entity id, all at ``ts``."""
    import pandas as pd

    from features import TIMESTAMP_FIELD

    rows = []
    for i, eid in enumerate(entity_ids):
        row = {view.entity: eid, TIMESTAMP_FIELD: ts}
        row.update({name: _value(t, i + 1) for name, t in view.fields})
        rows.append(row)
    return pd.DataFrame(rows)


def feedback_frame(user_ids, ts):
    import pyarrow as pa

    from features import event_log_schema

    schema = event_log_schema("feedback")
    rows = []
    for i, uid in enumerate(user_ids):
        row = {f.name: None for f in schema}
        row.update(event_id=f"fb-{uid}-{i}-{ts.timestamp()}", event_time=ts, user_id=uid, type="impression",
                   item_id="cr-1", campaign_id="c-1", position=0, spend=0.01, objects=["running_shoe"],
                   consent_personalization=True, consent_measurement=True)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def exposure_frame(user_ids, ts, *, unit_ids=None):
    import pyarrow as pa

    from features import event_log_schema

    unit_ids = unit_ids or user_ids
    return pa.Table.from_pylist(
        [dict(event_id=f"ex-{u}-{i}-{ts.timestamp()}", event_time=ts, user_id=u, experiment_id="e1", layer="l1",
              arm="b", unit_type="user", unit_id=unit_ids[i], request_id=f"r{i}")
         for i, u in enumerate(user_ids)], schema=event_log_schema("exposures"))


@dataclass
class Populated:
    settings: object
    store: object
    victim_app_id: str
    victim: str          # pseudonym
    bystander: str       # pseudonym
    online_rows_per_user: int


@pytest.fixture
def populated(feast_settings) -> Populated:
    """Victim and bystander in every store: Feast online (SQLite) + offline parts, both event logs."""
    from features import VIEWS, append_events, open_store, write_offline

    s = feast_settings
    victim = pseudonymize("app-user-victim", s.privacy.hmac_key)
    bystander = pseudonymize("app-user-bystander", s.privacy.hmac_key)
    store = open_store(s)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    online_rows = 0
    for view in VIEWS:
        ids = [victim, bystander] if view.user_keyed else ["item-or-campaign-1"]
        store.write_to_online_store(view.name, view_frame(view, ids, now))
        write_offline(s.feast_dir, view.name, view_frame(view, ids, now - timedelta(hours=1)))
        if view.user_keyed:
            online_rows += len(view.fields)
            write_offline(s.feast_dir, view.name, view_frame(view, [victim], now - timedelta(minutes=5)))
    append_events(s.data_dir, "feedback", feedback_frame([victim, bystander, victim], now))
    append_events(s.data_dir, "feedback", feedback_frame([victim], now))
    append_events(s.data_dir, "exposures", exposure_frame([victim, bystander], now))
    # a request-unit exposure whose unit id is the victim's pseudonym, logged under another user id
    append_events(s.data_dir, "exposures", exposure_frame(["someone-else"], now, unit_ids=[victim]))
    return Populated(s, store, "app-user-victim", victim, bystander, online_rows)


@pytest.fixture(scope="session")
def privacy_kit():
    """The frame builders of this conftest for test modules (conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(view_frame=view_frame, feedback_frame=feedback_frame, exposure_frame=exposure_frame)
