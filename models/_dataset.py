"""Training sets: logged impressions joined with features *as of* each impression, and splits.

Two ways to get the features, same column names (``models._schema.COUNT_COLUMNS``):

* ``feast_features``: Feast ``get_historical_features`` on an entity frame whose
  ``event_timestamp`` is the impression time minus 1 µs (Feast's join is inclusive, we
  want strictly before). Used when the Feast offline store holds data (``sightline train
  --source eventlog``).
* ``point_in_time_features``: the same windows computed with polars from the impression
  log itself (as-of joins on cumulative counts, strictly before each impression; clicks
  and conversions count from the time they happened, not from their impression's time).
  Used on a fresh simulated log where no Feast data exists (``--source simulate``,
  ``bench.quality``, ``bench.train``, tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from features import VIEWS_BY_NAME
from models.errors import TrainingDataError

log = logging.getLogger(__name__)

_EPS = timedelta(microseconds=1)

REQUIRED = ("event_time", "item_id", "click")
_ALIASES = {  # simulator / event-log spellings → ours
    "clicked": "click", "converted": "conversion", "timestamp": "event_time", "ts": "event_time",
    "true_pctr": "p_click", "p_ctr": "p_click", "true_p_click": "p_click", "pctr_true": "p_click",
    "true_pcvr": "p_conversion", "p_cvr": "p_conversion", "true_p_conversion": "p_conversion",
    "hour": "local_hour", "weekday": "local_weekday", "location": "location_category",
    "personalization": "consent_personalization",
}


def normalize_impressions(frame):
    """Rename known alternative column names, check the required ones, fill optional ones."""
    import polars as pl

    ren = {c: _ALIASES[c] for c in frame.columns if c in _ALIASES and _ALIASES[c] not in frame.columns}
    frame = frame.rename(ren)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"impressions lack columns {missing}; pass the simulator's logged impressions "
                                "or the feedback event log (see docs/models.md)")
    if frame.height == 0:
        raise TrainingDataError("no logged impressions; run `sightline simulate` or ingest feedback first")
    fill = {"conversion": pl.lit(0, pl.Int8), "user_id": pl.lit(""), "consent_personalization": pl.lit(False),
            "device": pl.lit(""), "scene": pl.lit(""), "category": pl.lit(""), "campaign_id": pl.lit("")}
    frame = frame.with_columns([v.alias(k) for k, v in fill.items() if k not in frame.columns])
    if frame.schema["event_time"] == pl.String:
        frame = frame.with_columns(pl.col("event_time").str.to_datetime(time_zone="UTC"))
    frame = frame.with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC")),
        pl.col("click").cast(pl.Int8), pl.col("conversion").fill_null(0).cast(pl.Int8),
        pl.col("consent_personalization").fill_null(False).cast(pl.Boolean),
    )
    if "device" in frame.columns and frame.schema["device"] != pl.String:
        frame = frame.with_columns(pl.col("device").cast(pl.String))
    return frame.sort("event_time", maintain_order=True)


def _label_times(frame, click_delay: timedelta, conversion_delay: timedelta):
    """When each click/conversion became known: its own time if logged, else impression + delay."""
    import polars as pl

    click_t = pl.col("click_time") if "click_time" in frame.columns else pl.lit(None, pl.Datetime("us", "UTC"))
    conv_t = pl.col("conversion_time") if "conversion_time" in frame.columns else pl.lit(None, pl.Datetime("us", "UTC"))
    return frame.with_columns(
        __click_t=pl.coalesce(click_t.cast(pl.Datetime("us", "UTC")), pl.col("event_time") + click_delay),
        __conv_t=pl.coalesce(conv_t.cast(pl.Datetime("us", "UTC")), pl.col("event_time") + conversion_delay),
    )


def _windowed(events, queries, key: list[str], windows: dict[str, timedelta], out_names: dict[str, str]):
    """Per query row (key, __t): sums of event columns in [__t - w, __t) for each window.

    ``events`` has key columns, ``t`` and count columns; ``out_names`` maps
    ``"<count>_<window>"`` to the output column name. Uses as-of joins on cumulative sums.
    """
    import polars as pl

    counts = [c for c in events.columns if c not in key and c != "t"]
    ev = events.sort("t").with_columns([pl.col(c).cum_sum().over(key).alias(f"cum_{c}") for c in counts])
    ev = ev.select(key + ["t"] + [f"cum_{c}" for c in counts])
    q = queries.select(["__row"] + key + ["__t"])
    out = q.select("__row")

    def cum_at(offset: timedelta, tag: str):
        left = q.with_columns((pl.col("__t") - offset - _EPS).alias("__q")).sort("__q")
        j = left.join_asof(ev, left_on="__q", right_on="t", by=key, strategy="backward", check_sortedness=False)
        return j.select(["__row"] + [pl.col(f"cum_{c}").fill_null(0).alias(f"{tag}_{c}") for c in counts])

    now = cum_at(timedelta(0), "now")
    out = out.join(now, on="__row", how="left")
    for wname, w in windows.items():
        past = cum_at(w, f"p{wname}")
        out = out.join(past, on="__row", how="left")
        for c in counts:
            name = out_names.get(f"{c}_{wname}")
            if name:
                out = out.with_columns((pl.col(f"now_{c}") - pl.col(f"p{wname}_{c}")).alias(name))
    keep = ["__row"] + [n for n in out_names.values() if n in out.columns]
    return out.select(keep)


def point_in_time_features(impressions, *, click_delay: timedelta = timedelta(seconds=30),
                           conversion_delay: timedelta = timedelta(minutes=30)):
    """The engagement/CTR features of every impression from events strictly before it (polars).

    Returns ``impressions`` (same order) plus ``COUNT_COLUMNS``. An impression counts from its
    own time; a click from its ``click_time`` (or impression + ``click_delay`` when the log has
    no click time), a conversion likewise. User features use only consented impressions.
    """
    import polars as pl

    frame = _label_times(normalize_impressions(impressions), click_delay, conversion_delay)
    frame = frame.with_row_index("__row").with_columns(
        pl.col("event_time").alias("__t"),
        (pl.col("scene").fill_null("") + "|" + pl.col("category").fill_null("")).alias("__ctx"),
    )

    def events(key: list[str], *, consent_only: bool = False):
        f = frame.filter(pl.col("consent_personalization")) if consent_only else frame
        base = f.select(key + ["event_time", "__click_t", "__conv_t", "click", "conversion"])
        imp = base.select(key + [pl.col("event_time").alias("t"), pl.lit(1).alias("imp"), pl.lit(0).alias("clk"), pl.lit(0).alias("conv")])
        clk = base.filter(pl.col("click") == 1).select(key + [pl.col("__click_t").alias("t"), pl.lit(0).alias("imp"), pl.lit(1).alias("clk"), pl.lit(0).alias("conv")])
        conv = base.filter(pl.col("conversion") == 1).select(key + [pl.col("__conv_t").alias("t"), pl.lit(0).alias("imp"), pl.lit(0).alias("clk"), pl.lit(1).alias("conv")])
        return pl.concat([imp, clk, conv])

    h1, d1, d7 = timedelta(hours=1), timedelta(hours=24), timedelta(days=7)
    parts = [
        _windowed(events(["item_id"]), frame, ["item_id"], {"1h": h1, "24h": d1},
                  {"imp_1h": "item_impressions_1h", "clk_1h": "item_clicks_1h", "imp_24h": "item_impressions_24h",
                   "clk_24h": "item_clicks_24h", "conv_24h": "item_conversions_24h"}),
        _windowed(events(["campaign_id"]), frame, ["campaign_id"], {"24h": d1},
                  {"imp_24h": "campaign_impressions_24h", "clk_24h": "campaign_clicks_24h", "conv_24h": "campaign_conversions_24h"}),
        _windowed(events(["__ctx"]), frame, ["__ctx"], {"24h": d1},
                  {"imp_24h": "ctx_events_24h", "clk_24h": "ctx_clicks_24h"}),
        _windowed(events(["user_id"], consent_only=True), frame, ["user_id"], {"24h": d1, "7d": d7},
                  {"imp_24h": "user_impressions_24h", "clk_24h": "user_clicks_24h", "imp_7d": "user_impressions_7d",
                   "clk_7d": "user_clicks_7d"}),
        _windowed(events(["user_id", "category"], consent_only=True), frame, ["user_id", "category"], {"7d": d7},
                  {"clk_7d": "user_category_clicks_7d"}),
    ]
    out = frame
    for p in parts:
        out = out.join(p, on="__row", how="left")
    zero_user = [c for c in out.columns if c.startswith("user_") and c != "user_id"]
    out = out.with_columns([pl.when(pl.col("consent_personalization")).then(pl.col(c)).otherwise(0).alias(c) for c in zero_user])
    return out.sort("__row").drop(["__row", "__t", "__ctx", "__click_t", "__conv_t"])


# Feast view field → our column name.
_FEAST_MAP = {
    "item_stats": {f: f"item_{f}" for f in ("impressions_1h", "clicks_1h", "impressions_24h", "clicks_24h", "conversions_24h")},
    "campaign_stats": {f: f"campaign_{f}" for f in ("impressions_24h", "clicks_24h", "conversions_24h")},
    "context_popularity": {"events_24h": "ctx_events_24h", "clicks_24h": "ctx_clicks_24h"},
    "user_engagement": {f: f"user_{f}" for f in ("impressions_24h", "clicks_24h", "impressions_7d", "clicks_7d")},
}


def feast_features(store, impressions):
    """Point-in-time join of the Feast views onto impressions (strictly before each one)."""
    import polars as pl

    frame = normalize_impressions(impressions).with_row_index("__row")
    entity = frame.select(
        "__row",
        pl.col("item_id").cast(pl.String), pl.col("campaign_id").fill_null("").cast(pl.String),
        pl.when(pl.col("consent_personalization")).then(pl.col("user_id")).otherwise(pl.lit("")).alias("user_id"),
        (pl.col("scene").fill_null("") + "|" + pl.col("category").fill_null("")).alias("context_key"),
        (pl.col("event_time") - _EPS).alias("event_timestamp"),
    ).to_pandas()
    got = pl.DataFrame({"__row": frame["__row"]})
    for view, fields in _FEAST_MAP.items():
        refs = [f"{view}:{f}" for f in fields]
        if view == "user_engagement":
            refs += [f"{view}:engaged_categories_7d", f"{view}:engaged_category_clicks_7d"]
        key = VIEWS_BY_NAME[view].entity
        rows = entity[entity[key] != ""]   # no consent (or no campaign): nothing to look up
        if rows.empty:
            continue
        # Feast collapses entity rows with equal (key, timestamp): query distinct pairs, join back.
        pairs = rows[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        pairs["__qid"] = range(len(pairs))
        try:
            part = store.get_historical_features(entity_df=pairs, features=refs, full_feature_names=True).to_df()
        except Exception as exc:  # noqa: BLE001 - Feast's file store fails on a view with no rows yet
            log.warning("Feast view %s gave no point-in-time values (%s); its features are 0", view, type(exc).__name__)
            continue
        part = part.drop(columns=[c for c in (key, "event_timestamp") if c in part.columns])
        back = rows[["__row", key, "event_timestamp"]].merge(pairs, on=[key, "event_timestamp"], how="left")
        part = pl.from_pandas(back[["__row", "__qid"]]).join(pl.from_pandas(part), on="__qid", how="left").drop("__qid")
        got = got.join(part, on="__row", how="left")
    rename = {f"{v}__{f}": col for v, m in _FEAST_MAP.items() for f, col in m.items()}
    rename.update({f"user_engagement__{f}": f for f in ("engaged_categories_7d", "engaged_category_clicks_7d")})
    got = got.rename({k: v for k, v in rename.items() if k in got.columns})
    for c in ("engaged_categories_7d", "engaged_category_clicks_7d"):
        if c not in got.columns:
            got = got.with_columns(pl.lit(None, pl.List(pl.Int64 if "clicks" in c else pl.String)).alias(c))
    cats = frame.select("__row", "category")
    got = got.join(cats, on="__row", how="left")
    got = got.with_columns(
        pl.struct(["engaged_categories_7d", "engaged_category_clicks_7d", "category"]).map_elements(
            _category_clicks, return_dtype=pl.Int64).alias("user_category_clicks_7d"))
    keep = ["__row"] + [c for c in list(rename.values()) + ["user_category_clicks_7d"] if c in got.columns]
    got = got.select(list(dict.fromkeys(keep)))
    out = frame.join(got, on="__row", how="left").sort("__row").drop("__row")
    counts = [c for c in got.columns if c != "__row" and not isinstance(got.schema[c], pl.List)]
    return out.with_columns([pl.col(c).fill_null(0) for c in counts])


def _category_clicks(s: dict) -> int:
    cats, clicks, cat = s.get("engaged_categories_7d"), s.get("engaged_category_clicks_7d"), s.get("category")
    if not cats or not clicks or cat is None:
        return 0
    for c, k in zip(cats, clicks):
        if c == cat:
            return int(k or 0)
    return 0


@dataclass(frozen=True)
class Split:
    """Time-based train/validation/test split of a featurized impression frame."""

    train: object
    valid: object
    test: object

    @property
    def window(self) -> dict:
        def span(f):
            return [str(f["event_time"].min()), str(f["event_time"].max())] if f.height else [None, None]
        return {"train": span(self.train), "valid": span(self.valid), "test": span(self.test)}


def time_split(frame, valid: float = 0.1, test: float = 0.2) -> Split:
    """Oldest ``1-valid-test`` for training, then validation, newest for test (no shuffling)."""
    n = frame.height
    a, b = int(n * (1 - valid - test)), int(n * (1 - test))
    frame = frame.sort("event_time", maintain_order=True)
    train, val, tst = frame.slice(0, a), frame.slice(a, b - a), frame.slice(b, n - b)
    for name, part in (("train", train), ("test", tst)):
        if part.height == 0 or part["click"].n_unique() < 2:
            raise TrainingDataError(f"the {name} split has {part.height} rows and one label class; log more impressions")
    return Split(train, val, tst)


def build_training_set(impressions, store=None, **delays) -> object:
    """Featurized impressions: Feast point-in-time join when ``store`` is given, else polars windows."""
    if store is not None:
        log.info("features: Feast point-in-time join (%d impressions)", impressions.height)
        return feast_features(store, impressions)
    log.info("features: polars point-in-time windows over the impression log (%d impressions)", impressions.height)
    return point_in_time_features(impressions, **delays)
