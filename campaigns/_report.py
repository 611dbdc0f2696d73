"""Delivery reports: per campaign and UTC day, from the feedback event log, with polars.

``delivery_report`` is pure (events frame + campaigns in, report frame out); the rim
functions read the log (``features.read_events(data_dir, "feedback")``), write CSV and
draw the PNG of spend against plan.

Definitions (per campaign and day; a ratio is null when its denominator is 0):
  spend = sum of ``spend`` over impression, click and conversion events
  CTR = clicks / impressions, CVR = conversions / clicks,
  CPC = spend / clicks, CPA = spend / conversions
  planned_spend = the daily budget, else the lifetime budget spread evenly over the
  scheduled days (``Campaign.daily_plan``); budget_used = spend / planned_spend
  pacing_status compares spend with the plan pro-rated to the elapsed part of the day:
  ``underpacing`` below 80 %, ``overpacing`` above 110 %, else ``on_track``;
  ``no_plan`` when the campaign has no per-day plan.
Events are de-duplicated by ``event_id`` (replays must not double-count) and events
logged without measurement consent are ignored.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from campaigns._model import Campaign

UNDER = 0.8
OVER = 1.1

REPORT_COLUMNS = ("campaign_id", "day", "impressions", "clicks", "conversions", "spend", "ctr", "cvr", "cpc",
                  "cpa", "planned_spend", "budget_used", "pacing_status")


def _empty():
    import polars as pl

    return pl.DataFrame(schema={
        "campaign_id": pl.Utf8, "day": pl.Date, "impressions": pl.Int64, "clicks": pl.Int64,
        "conversions": pl.Int64, "spend": pl.Float64, "ctr": pl.Float64, "cvr": pl.Float64, "cpc": pl.Float64,
        "cpa": pl.Float64, "planned_spend": pl.Float64, "budget_used": pl.Float64, "pacing_status": pl.Utf8,
    })


def pacing_status(spend: float, planned: float | None, elapsed_fraction: float) -> str:
    """Pure pacing rule for one campaign-day (see the module docstring)."""
    if planned is None or planned <= 0:
        return "no_plan"
    expected = planned * max(0.0, min(1.0, elapsed_fraction))
    if expected <= 0:
        return "on_track" if spend <= 0 else "overpacing"
    ratio = spend / expected
    if ratio < UNDER:
        return "underpacing"
    if ratio > OVER:
        return "overpacing"
    return "on_track"


def delivery_report(events, campaigns: Sequence[Campaign], *, since: date | None = None, until: date | None = None,
                    now: datetime | None = None):
    """Report frame (columns ``REPORT_COLUMNS``) for ``campaigns`` from feedback ``events``.

    Rows cover every day from ``since`` (default: first event day) to ``until``
    (default: last event day) that lies inside each campaign's schedule, so days with
    no delivery show up as zero spend (and ``underpacing``).
    """
    import polars as pl

    now = now or datetime.now(timezone.utc)
    by_id = {c.id: c for c in campaigns}
    if not by_id:
        return _empty()
    ev = events.lazy().filter(pl.col("campaign_id").is_in(list(by_id)))
    if "consent_measurement" in events.columns:
        ev = ev.filter(pl.col("consent_measurement").fill_null(True))
    ev = ev.unique(subset="event_id", keep="first").with_columns(
        pl.col("event_time").dt.convert_time_zone("UTC").dt.date().alias("day"))
    if since is not None:
        ev = ev.filter(pl.col("day") >= since)
    if until is not None:
        ev = ev.filter(pl.col("day") <= until)
    agg = ev.group_by("campaign_id", "day").agg(
        (pl.col("type") == "impression").sum().cast(pl.Int64).alias("impressions"),
        (pl.col("type") == "click").sum().cast(pl.Int64).alias("clicks"),
        (pl.col("type") == "conversion").sum().cast(pl.Int64).alias("conversions"),
        pl.col("spend").fill_null(0.0).sum().alias("spend"),
    ).collect()
    lo = since or (agg["day"].min() if agg.height else None)
    hi = until or (agg["day"].max() if agg.height else None)
    if lo is None or hi is None or hi < lo:
        return _empty()
    grid_rows = []
    for c in campaigns:
        first = c.schedule.start.date()
        last = (c.schedule.end - timedelta(microseconds=1)).date() if c.schedule.end else hi
        d = max(lo, first)
        while d <= min(hi, last):
            grid_rows.append((c.id, d, c.daily_plan(d)))
            d += timedelta(days=1)
    if not grid_rows:
        return _empty()
    grid = pl.DataFrame(grid_rows, schema={"campaign_id": pl.Utf8, "day": pl.Date, "planned_spend": pl.Float64},
                        orient="row")
    df = grid.join(agg, on=["campaign_id", "day"], how="left").with_columns(
        pl.col("impressions", "clicks", "conversions").fill_null(0),
        pl.col("spend").fill_null(0.0),
    )

    def ratio(num: str, den: str):
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(None)

    df = df.with_columns(
        ratio("clicks", "impressions").alias("ctr"),
        ratio("conversions", "clicks").alias("cvr"),
        ratio("spend", "clicks").alias("cpc"),
        ratio("spend", "conversions").alias("cpa"),
        ratio("spend", "planned_spend").alias("budget_used"),
    )
    today = now.astimezone(timezone.utc).date()
    frac_today = (now - datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc)).total_seconds() / 86400
    statuses = [
        pacing_status(spend, planned, 1.0 if day < today else (frac_today if day == today else 0.0))
        for spend, planned, day in zip(df["spend"], df["planned_spend"], df["day"])
    ]
    df = df.with_columns(pl.Series("pacing_status", statuses, dtype=pl.Utf8))
    return df.select(REPORT_COLUMNS).sort("campaign_id", "day")


def report_from_log(data_dir: Path, campaigns: Sequence[Campaign], **kwargs):
    """``delivery_report`` over the feedback event log under ``data_dir``."""
    from features import read_events

    return delivery_report(read_events(Path(data_dir), "feedback"), campaigns, **kwargs)


def totals(report) -> dict[str, float]:
    """Whole-report totals with the same ratio definitions."""
    s = {k: float(report[k].sum()) if report.height else 0.0
         for k in ("impressions", "clicks", "conversions", "spend", "planned_spend")}
    s["ctr"] = s["clicks"] / s["impressions"] if s["impressions"] else float("nan")
    s["cvr"] = s["conversions"] / s["clicks"] if s["clicks"] else float("nan")
    s["cpc"] = s["spend"] / s["clicks"] if s["clicks"] else float("nan")
    s["cpa"] = s["spend"] / s["conversions"] if s["conversions"] else float("nan")
    return s


def plot_spend(report, path: Path, *, max_panels: int = 6) -> Path:
    """PNG of daily spend (bars) against the planned spend (line); one panel per campaign,
    or one for the total when there are more than ``max_panels`` campaigns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = report["campaign_id"].unique(maintain_order=True).to_list() if report.height else []
    if len(ids) > max_panels:
        panels = [("all campaigns", report.group_by("day").agg(pl.col("spend").sum(),
                                                                pl.col("planned_spend").sum()).sort("day"))]
    else:
        panels = [(cid, report.filter(pl.col("campaign_id") == cid)) for cid in ids] or [("no delivery", report)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels) + 0.6), squeeze=False)
    for ax, (title, part) in zip(axes[:, 0], panels):
        days = part["day"].to_list()
        ax.bar(days, part["spend"].to_list(), color="#4C72B0", label="spend")
        planned = part["planned_spend"].to_list()
        if any(p is not None for p in planned):
            ax.plot(days, [p if p is not None else float("nan") for p in planned], color="#DD8452",
                    marker="o", label="plan")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("spend")
        ax.legend(loc="upper left", fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle("Delivery: spend against plan per day (UTC)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
