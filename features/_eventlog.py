"""Sightline's own offline event logs: feedback and exposures as parquet part files.

The streaming stage appends what it consumed (with measurement consent only);
delivery reports, experiment analysis, training-set building and erasure read or
rewrite them. Layout: ``<data_dir>/events/<kind>/part-<epoch_ms>-<uuid>.parquet``.
"""

from __future__ import annotations

from pathlib import Path

EVENT_KINDS = ("feedback", "exposures")


def _schema(kind: str):
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    if kind == "feedback":
        return pa.schema([
            ("event_id", pa.string()), ("event_time", ts), ("user_id", pa.string()),
            ("type", pa.string()),                 # impression | click | conversion
            ("impression_token", pa.string()), ("request_id", pa.string()),
            ("item_kind", pa.string()),            # ad | product
            ("item_id", pa.string()), ("campaign_id", pa.string()), ("advertiser_id", pa.string()),
            ("product_sku", pa.string()), ("category", pa.string()), ("position", pa.int32()),
            ("spend", pa.float64()), ("conversion_value", pa.float64()),
            ("model_version", pa.string()), ("pctr", pa.float64()), ("app_id", pa.string()),
            ("device", pa.string()), ("scene", pa.string()), ("objects", pa.list_(pa.string())),
            ("intent_text", pa.string()), ("location_category", pa.string()), ("region", pa.string()),
            ("local_hour", pa.int32()), ("local_weekday", pa.int32()),
            ("experiment_arms", pa.string()),      # JSON object {experiment_id: arm}
            ("consent_personalization", pa.bool_()), ("consent_measurement", pa.bool_()),
            # impressions logged by Recommend: the server's time to answer the request (ms);
            # null on other events and in parts written before 2026-12-05
            ("serve_ms", pa.float64()),
        ])
    if kind == "exposures":
        return pa.schema([
            ("event_id", pa.string()), ("event_time", ts), ("user_id", pa.string()),
            ("experiment_id", pa.string()), ("layer", pa.string()), ("arm", pa.string()),
            ("unit_type", pa.string()), ("unit_id", pa.string()), ("request_id", pa.string()),
        ])
    raise ValueError(f"unknown event log {kind!r}; use one of {', '.join(EVENT_KINDS)}")


def event_log_schema(kind: str):
    """The pyarrow schema of an event log (``feedback`` or ``exposures``)."""
    return _schema(kind)


def event_log_dir(data_dir: Path, kind: str) -> Path:
    _schema(kind)
    return Path(data_dir) / "events" / kind


def append_events(data_dir: Path, kind: str, table) -> Path | None:
    """Append rows (pyarrow Table, polars or pandas DataFrame) as one new part file."""
    from features._offline import append_part

    return append_part(event_log_dir(data_dir, kind), table, _schema(kind))


def read_events(data_dir: Path, kind: str):
    """All rows of an event log as a polars DataFrame in the current schema (empty, correctly
    typed, if none; a column newer than a part file is null in its rows)."""
    import polars as pl

    directory = event_log_dir(data_dir, kind)
    parts = sorted(directory.glob("part-*.parquet")) if directory.exists() else []
    empty = pl.from_arrow(_schema(kind).empty_table())
    if not parts:
        return empty
    # parts written before a column was added lack it: read as nulls (the columns only grow)
    return pl.read_parquet(parts, schema=empty.schema, missing_columns="insert")
