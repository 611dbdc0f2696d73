"""`sightline train --source eventlog`: feedback event log + Feast point-in-time join → registry."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from features import append_events, event_log_schema
from models.testing import synthetic_impressions
from sightline.cli import main

pytestmark = pytest.mark.integration


def _feedback(imps: pl.DataFrame) -> pl.DataFrame:
    base = imps.with_columns(pl.col("event_id").alias("impression_token"), pl.lit("impression").alias("type"))
    clicks = imps.filter(pl.col("click") == 1).with_columns(
        (pl.col("event_id") + "-c").alias("event_id"), pl.col("event_id").alias("impression_token"),
        pl.col("click_time").alias("event_time"), pl.lit("click").alias("type"))
    convs = imps.filter(pl.col("conversion") == 1).with_columns(
        (pl.col("event_id") + "-v").alias("event_id"), pl.col("event_id").alias("impression_token"),
        pl.col("conversion_time").alias("event_time"), pl.lit("conversion").alias("type"))
    rows = pl.concat([base, clicks, convs], how="vertical_relaxed")
    schema = event_log_schema("feedback")
    return rows.select([pl.col(n) if n in rows.columns else pl.lit(None).alias(n) for n in schema.names])


def test_train_from_event_log_uses_feast(feast_settings):
    imps = synthetic_impressions(3000, seed=41)
    append_events(feast_settings.data_dir, "feedback", _feedback(imps))
    runner = CliRunner()
    base = ["--data-dir", str(feast_settings.data_dir)]
    res = runner.invoke(main, base + ["train", "--model", "logreg", "--source", "eventlog"])
    assert res.exit_code == 0, res.output
    assert "Feast point-in-time join" in res.output
    meta = json.loads(runner.invoke(main, base + ["models", "show", "candidate"]).output)
    assert meta["feature_source"] == "feast" and meta["rows"]["train"] > 1500
    assert meta["metrics"]["auc"] > 0.55
