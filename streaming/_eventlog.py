"""Feedback and exposure events → rows of the offline event logs (``features.append_events``)."""

from __future__ import annotations

import json
from pathlib import Path

from proto import events_pb2 as pb

_TYPES = {pb.IMPRESSION: "impression", pb.CLICK: "click", pb.CONVERSION: "conversion"}
_KINDS = {pb.AD: "ad", pb.PRODUCT: "product"}
_DEVICES = {pb.GLASSES: "glasses", pb.PHONE: "phone"}


def feedback_rows(events: list[tuple[pb.FeedbackEvent, bool, bool]]) -> dict[str, list]:
    """Columns of the feedback log for ``(event, personalization, measurement)`` triples."""
    from datetime import datetime, timezone

    cols: dict[str, list] = {k: [] for k in (
        "event_id", "event_time", "user_id", "type", "impression_token", "request_id", "item_kind", "item_id",
        "campaign_id", "advertiser_id", "product_sku", "category", "position", "spend", "conversion_value",
        "model_version", "pctr", "app_id", "device", "scene", "objects", "intent_text", "location_category",
        "region", "local_hour", "local_weekday", "experiment_arms", "consent_personalization", "consent_measurement",
        "serve_ms")}
    for m, personalization, measurement in events:
        c = m.context
        values = (
            m.event_id, datetime.fromtimestamp(m.event_time_ms / 1000, tz=timezone.utc), m.user_id, _TYPES.get(m.type, ""),
            m.impression_token, m.request_id, _KINDS.get(m.item_kind, ""), m.item_id, m.campaign_id, m.advertiser_id,
            m.product_sku, m.category, m.position, m.spend, m.conversion_value, m.model_version, m.pctr, m.app_id,
            _DEVICES.get(c.device, ""), c.scene, list(c.objects), c.intent_text, c.location_category, c.region,
            c.local_hour, c.local_weekday, json.dumps(dict(m.experiment_arms), sort_keys=True), personalization, measurement,
            m.serve_ms or None)
        for key, value in zip(cols, values):
            cols[key].append(value)
    return cols


def exposure_rows(events: list[pb.ExposureEvent]) -> dict[str, list]:
    from datetime import datetime, timezone

    cols: dict[str, list] = {k: [] for k in ("event_id", "event_time", "user_id", "experiment_id", "layer", "arm",
                                             "unit_type", "unit_id", "request_id")}
    for m in events:
        values = (m.event_id, datetime.fromtimestamp(m.event_time_ms / 1000, tz=timezone.utc), m.user_id,
                  m.experiment_id, m.layer, m.arm, m.unit_type, m.unit_id, m.request_id)
        for key, value in zip(cols, values):
            cols[key].append(value)
    return cols


def logged_ids_since(data_dir: Path, kind: str, since_ms: int) -> set[str]:
    """Event ids already in log parts written at or after ``since_ms`` (crash recovery of a flush)."""
    import pyarrow.parquet as pq

    from features import event_log_dir

    directory = event_log_dir(data_dir, kind)
    ids: set[str] = set()
    if not directory.exists():
        return ids
    for part in directory.glob("part-*.parquet"):
        try:
            written_ms = int(part.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if written_ms >= since_ms:
            ids.update(pq.read_table(part, columns=["event_id"]).column("event_id").to_pylist())
    return ids
