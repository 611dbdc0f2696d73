"""Delivery report figures against an independent (plain Python) computation on a small
fixed event set written to a real parquet event log."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest

from campaigns import Campaign, delivery_report, pacing_status, plot_spend, report_from_log, totals

DAY0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 10, 12, tzinfo=timezone.utc)


def _campaigns(campaign_doc) -> list[Campaign]:
    c1 = Campaign.from_doc(campaign_doc("c1", schedule={"start": DAY0, "end": DAY0 + timedelta(days=30)},
                                        budget={"daily": 10.0, "currency": "EUR"},
                                        bid={"strategy": "CPC", "amount": 0.5}))
    c2 = Campaign.from_doc(campaign_doc("c2", schedule={"start": DAY0, "end": DAY0 + timedelta(days=3)},
                                        budget={"lifetime": 30.0, "currency": "EUR"},
                                        bid={"strategy": "CPM", "amount": 4.0}))
    return [c1, c2]


def _events(seed: int = 7) -> list[dict]:
    """~600 events over 3 days for c1/c2 plus noise the report must ignore."""
    rng = random.Random(seed)
    rows = []
    n = 0

    def ev(cid, kind, t, spend, **over):
        nonlocal n
        n += 1
        row = {"event_id": f"e{n}", "event_time": t, "user_id": f"u{rng.randrange(50)}", "type": kind,
               "impression_token": f"tok{n}", "request_id": f"r{n}", "item_kind": "ad", "item_id": f"{cid}-cr1",
               "campaign_id": cid, "advertiser_id": "acme", "product_sku": None, "category": "sports/running_shoes",
               "position": 0, "spend": spend, "conversion_value": 0.0, "model_version": "m1", "pctr": 0.05,
               "app_id": "app", "device": "glasses", "scene": "gym", "objects": ["shoe"], "intent_text": "",
               "location_category": "retail", "region": "DE", "local_hour": 10, "local_weekday": 1,
               "experiment_arms": "{}", "consent_personalization": True, "consent_measurement": True}
        row.update(over)
        rows.append(row)
        return row

    for d in range(3):
        for cid, imps in (("c1", rng.randrange(80, 120)), ("c2", rng.randrange(60, 90))):
            for _ in range(imps):
                t = DAY0 + timedelta(days=d, seconds=rng.randrange(86400))
                ev(cid, "impression", t, 0.004 if cid == "c2" else 0.0)
                if rng.random() < 0.1:
                    ev(cid, "click", t + timedelta(seconds=5), 0.5 if cid == "c1" else 0.0)
                    if rng.random() < 0.3:
                        ev(cid, "conversion", t + timedelta(seconds=60), 0.0, conversion_value=20.0)
    # noise: a replayed duplicate, an event without measurement consent, a product
    # suggestion (no campaign), an unknown campaign, and an event late on day 2 (23:59:59)
    rows.append(dict(rows[3]))
    ev("c1", "click", DAY0 + timedelta(hours=5), 0.5, consent_measurement=False)
    ev(None, "impression", DAY0 + timedelta(hours=6), 0.0, item_kind="product")
    ev("c9", "click", DAY0 + timedelta(hours=7), 3.0)
    ev("c1", "click", DAY0 + timedelta(days=1, hours=23, minutes=59, seconds=59), 0.5)
    return rows


def _independent(rows: list[dict], campaigns: list[Campaign]) -> dict:
    plans = {c.id: c.daily_plan() for c in campaigns}
    seen, out = set(), defaultdict(lambda: {"impressions": 0, "clicks": 0, "conversions": 0, "spend": 0.0})
    for r in rows:
        if r["event_id"] in seen or r["campaign_id"] not in plans or not r["consent_measurement"]:
            continue
        seen.add(r["event_id"])
        cell = out[(r["campaign_id"], r["event_time"].date())]
        cell[r["type"] + "s"] += 1
        cell["spend"] += r["spend"]
    for (cid, _), cell in out.items():
        cell["plan"] = plans[cid]
    return out


@pytest.fixture
def event_log(tmp_path):
    import pyarrow as pa

    from features import append_events, event_log_schema

    rows = _events()
    schema = event_log_schema("feedback")
    half = len(rows) // 2
    for part in (rows[:half], rows[half:]):      # two part files, like two streaming batches
        append_events(tmp_path, "feedback", pa.Table.from_pylist(part, schema=schema))
    return tmp_path, rows


def test_report_matches_independent_computation(event_log, campaign_doc):
    data_dir, rows = event_log
    campaigns = _campaigns(campaign_doc)
    report = report_from_log(data_dir, campaigns, now=NOW)
    expected = _independent(rows, campaigns)
    got = {(r["campaign_id"], r["day"]): r for r in report.iter_rows(named=True)}
    assert set(got) == set(expected) and len(got) == 6
    for key, exp in expected.items():
        r = got[key]
        assert (r["impressions"], r["clicks"], r["conversions"]) == (exp["impressions"], exp["clicks"], exp["conversions"])
        assert r["spend"] == pytest.approx(exp["spend"])
        assert r["ctr"] == pytest.approx(exp["clicks"] / exp["impressions"])
        assert r["cvr"] == (pytest.approx(exp["conversions"] / exp["clicks"]) if exp["clicks"] else None)
        assert r["cpc"] == (pytest.approx(exp["spend"] / exp["clicks"]) if exp["clicks"] else None)
        assert r["cpa"] == (pytest.approx(exp["spend"] / exp["conversions"]) if exp["conversions"] else None)
        assert r["planned_spend"] == pytest.approx(exp["plan"])
        assert r["budget_used"] == pytest.approx(exp["spend"] / exp["plan"])
        assert r["pacing_status"] == pacing_status(exp["spend"], exp["plan"], 1.0)
    # day boundary: the 23:59:59 click belongs to day 2, not day 3
    assert got[("c1", date(2026, 11, 3))]["clicks"] == expected[("c1", date(2026, 11, 3))]["clicks"]
    t = totals(report)
    assert t["impressions"] == sum(e["impressions"] for e in expected.values())
    assert t["spend"] == pytest.approx(sum(e["spend"] for e in expected.values()))


def test_report_fills_days_without_delivery_and_filters_dates(event_log, campaign_doc):
    data_dir, _ = event_log
    campaigns = _campaigns(campaign_doc)
    report = report_from_log(data_dir, campaigns, since=date(2026, 11, 3), until=date(2026, 11, 6), now=NOW)
    days = {(r["campaign_id"], r["day"]) for r in report.iter_rows(named=True)}
    # c1 runs every day (zero rows for 5th and 6th), c2's schedule ends after the 4th
    assert days == {("c1", date(2026, 11, d)) for d in (3, 4, 5, 6)} | {("c2", date(2026, 11, d)) for d in (3, 4)}
    empty = report.filter((report["campaign_id"] == "c1") & (report["day"] == date(2026, 11, 6))).row(0, named=True)
    assert empty["impressions"] == 0 and empty["spend"] == 0.0 and empty["ctr"] is None
    assert empty["pacing_status"] == "underpacing"


def test_pacing_status_rule():
    assert pacing_status(5.0, None, 1.0) == "no_plan"
    assert pacing_status(10.0, 10.0, 1.0) == "on_track"
    assert pacing_status(7.0, 10.0, 1.0) == "underpacing"
    assert pacing_status(12.0, 10.0, 1.0) == "overpacing"
    assert pacing_status(5.0, 10.0, 0.5) == "on_track"      # half-way through today
    assert pacing_status(9.0, 10.0, 0.5) == "overpacing"


def test_csv_and_png(event_log, campaign_doc, tmp_path):
    import polars as pl

    data_dir, _ = event_log
    report = report_from_log(data_dir, _campaigns(campaign_doc), now=NOW)
    report.write_csv(tmp_path / "r.csv")
    back = pl.read_csv(tmp_path / "r.csv")
    assert back.columns == report.columns and back.height == report.height
    png = plot_spend(report, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_empty_log_gives_empty_report(tmp_path, campaign_doc):
    report = report_from_log(tmp_path, _campaigns(campaign_doc), now=NOW)
    assert report.height == 0
    assert math.isnan(totals(report)["ctr"])
    assert delivery_report(report, [], now=NOW).height == 0
