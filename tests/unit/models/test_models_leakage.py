"""Leakage: no feature of an impression uses an event at or after its time (polars path).

The Feast path has its own test in tests/integration/models/test_models_feast_join.py.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from models import COUNT_COLUMNS, point_in_time_features
from models.testing import synthetic_impressions


def _truncate_at(log: pl.DataFrame, t) -> pl.DataFrame:
    """What the world knew just before ``t``: earlier impressions, labels only if already happened."""
    before = log.filter(pl.col("event_time") < t)
    return before.with_columns(
        click=(pl.col("click") == 1) & (pl.col("click_time") < t),
        conversion=(pl.col("conversion") == 1) & (pl.col("conversion_time") < t),
    ).with_columns(pl.col("click", "conversion").cast(pl.Int8))


def test_features_equal_those_computed_from_the_past_only():
    log = synthetic_impressions(3000, seed=11, days=1.0, n_items=40, n_users=60)
    full = point_in_time_features(log)
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(500, log.height), size=8, replace=False).tolist():
        row = log.slice(i, 1)
        t = row["event_time"][0]
        # the past plus this impression with its label hidden (its own click must not leak either)
        past = pl.concat([_truncate_at(log, t), row.with_columns(
            click=pl.lit(0, pl.Int8), conversion=pl.lit(0, pl.Int8),
            click_time=pl.lit(None, pl.Datetime("us", "UTC")), conversion_time=pl.lit(None, pl.Datetime("us", "UTC")))],
            how="vertical_relaxed")
        only_past = point_in_time_features(past).filter(pl.col("event_id") == row["event_id"][0])
        got = full.filter(pl.col("event_id") == row["event_id"][0])
        for col in COUNT_COLUMNS:
            assert got[col][0] == only_past[col][0], (i, col)


def test_item_counts_match_brute_force_windows():
    log = synthetic_impressions(2000, seed=12, days=1.0, n_items=30)
    full = point_in_time_features(log)
    for i in (100, 900, 1999):
        r = full.row(i, named=True)
        t = r["event_time"]
        same = log.filter(pl.col("item_id") == r["item_id"])
        imps = same.filter((pl.col("event_time") < t) & (pl.col("event_time") >= t - timedelta(hours=24))).height
        clicks = same.filter((pl.col("click_time") < t) & (pl.col("click_time") >= t - timedelta(hours=24))).height
        assert r["item_impressions_24h"] == imps
        assert r["item_clicks_24h"] == clicks


def test_a_click_counts_only_after_it_happened():
    log = synthetic_impressions(50, seed=13, n_items=1, n_users=1, days=0.01)
    full = point_in_time_features(log)
    times = log["event_time"].to_list()
    click_times = [c for c in log["click_time"].to_list() if c is not None]
    for t, clicks in zip(times, full["item_clicks_1h"].to_list()):
        assert clicks == sum(1 for c in click_times if c < t)
