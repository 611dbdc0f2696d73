"""Windowed features as pure polars functions over one-minute count buckets.

Events become *bucket deltas* (``to_buckets``): rows keyed by (view, entity, sub,
minute) carrying up to three integer counts ``n1..n3``, a float sum ``x`` and the
latest event time ``last_ts`` (epoch ms). The state store adds deltas of events it
has not seen before; ``compute_features`` turns an entity's stored buckets into one
feature row. A window ``w`` at an entity's row time ``T`` (its latest event, over
every sub-key of the view) covers the buckets with minute in ``(minute(T) - w,
minute(T)]``. Recomputing from stored buckets is idempotent, which is what makes a
replayed batch harmless.

Bucket views (``view`` column) and what ``n1..n3``/``x`` count:

====== ================== =========================================== =============================
view   entity             sub                                          n1 / n2 / n3 / x
====== ================== =========================================== =============================
uc     user_id            "" | "s:<scene>" | "o:<object>" | "i:<cat>"  context events
ue     user_id            "" | "<category>"                            impressions / clicks
it     item_id            ""                                           impressions / clicks / conversions
ca     campaign_id        ""                                           impressions / clicks / conversions / spend
cp     "<scene>|<cat>"    ""                                           context events / impressions / clicks
====== ================== =========================================== =============================
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features import TIMESTAMP_FIELD

MINUTE_MS = 60_000
H1, H24, D7 = 60, 24 * 60, 7 * 24 * 60
BUCKET_VIEWS = {"uc": "user_context", "ue": "user_engagement", "it": "item_stats", "ca": "campaign_stats",
                "cp": "context_popularity"}
FEATURE_VIEW_TO_BUCKET = {v: k for k, v in BUCKET_VIEWS.items()}
USER_BUCKET_VIEWS = ("uc", "ue")
BUCKET_SCHEMA = {
    "view": pl.String, "entity": pl.String, "sub": pl.String, "minute": pl.Int64,
    "n1": pl.Int64, "n2": pl.Int64, "n3": pl.Int64, "x": pl.Float64, "last_ts": pl.Int64,
}
IMPRESSION, CLICK, CONVERSION = 1, 2, 3   # proto FeedbackType values


@dataclass(frozen=True)
class WindowParams:
    """Knobs of the feature computation (from ``settings.streaming``)."""

    recent_n: int = 10
    top_categories: int = 20
    ctr_prior: float = 0.02
    ctr_prior_weight: float = 50.0


def empty_buckets() -> pl.DataFrame:
    return pl.DataFrame(schema=BUCKET_SCHEMA)


def _finish(frame: pl.DataFrame, view: str, entity: pl.Expr, sub: pl.Expr, n1, n2=None, n3=None, x=None) -> pl.DataFrame:
    zero = pl.lit(0, pl.Int64)
    return frame.select(
        pl.lit(view).alias("view"), entity.cast(pl.String).alias("entity"), sub.cast(pl.String).alias("sub"),
        (pl.col("ts") // MINUTE_MS).alias("minute"),
        (n1 if n1 is not None else zero).cast(pl.Int64).alias("n1"),
        (n2 if n2 is not None else zero).cast(pl.Int64).alias("n2"),
        (n3 if n3 is not None else zero).cast(pl.Int64).alias("n3"),
        (x if x is not None else pl.lit(0.0)).cast(pl.Float64).alias("x"),
        pl.col("ts").alias("last_ts"),
    )


def to_buckets(context: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """Bucket deltas of already filtered, de-duplicated events (summed per bucket key).

    ``context``: event_id, ts, user_id, user_keyed, scene (null if dropped), objects,
    intent_categories, categories (list[str] each; sensitive ones already removed).
    ``feedback``: event_id, ts, user_id, user_keyed, type, item_id, campaign_id,
    category (null if sensitive/unknown), scene, spend.
    """
    parts: list[pl.DataFrame] = []
    one = pl.lit(1)
    if context.height:
        user = context.filter(pl.col("user_keyed"))
        if user.height:
            parts.append(_finish(user, "uc", pl.col("user_id"), pl.lit(""), one))
            scenes = user.filter(pl.col("scene").is_not_null() & (pl.col("scene") != ""))
            parts.append(_finish(scenes, "uc", pl.col("user_id"), pl.lit("s:") + pl.col("scene"), one))
            for col, prefix in (("objects", "o:"), ("intent_categories", "i:")):
                exploded = user.select("ts", "user_id", pl.col(col).list.unique()).explode(col).drop_nulls(col)
                parts.append(_finish(exploded, "uc", pl.col("user_id"), pl.lit(prefix) + pl.col(col), one))
        pop = (context.filter(pl.col("scene").is_not_null() & (pl.col("scene") != ""))
               .select("ts", "scene", pl.col("categories").list.unique()).explode("categories").drop_nulls("categories"))
        parts.append(_finish(pop, "cp", pl.col("scene") + "|" + pl.col("categories"), pl.lit(""), one))
    if feedback.height:
        imp = (pl.col("type") == IMPRESSION).cast(pl.Int64)
        clk = (pl.col("type") == CLICK).cast(pl.Int64)
        conv = (pl.col("type") == CONVERSION).cast(pl.Int64)
        user = feedback.filter(pl.col("user_keyed") & pl.col("type").is_in([IMPRESSION, CLICK]))
        parts.append(_finish(user, "ue", pl.col("user_id"), pl.lit(""), imp, clk))
        cat = user.filter(pl.col("category").is_not_null() & (pl.col("category") != ""))
        parts.append(_finish(cat, "ue", pl.col("user_id"), pl.col("category"), imp, clk))
        parts.append(_finish(feedback, "it", pl.col("item_id"), pl.lit(""), imp, clk, conv))
        camp = feedback.filter(pl.col("campaign_id").is_not_null() & (pl.col("campaign_id") != ""))
        parts.append(_finish(camp, "ca", pl.col("campaign_id"), pl.lit(""), imp, clk, conv, pl.col("spend")))
        pop = feedback.filter(pl.col("scene").is_not_null() & (pl.col("scene") != "")
                              & pl.col("category").is_not_null() & (pl.col("category") != "")
                              & pl.col("type").is_in([IMPRESSION, CLICK]))
        parts.append(_finish(pop, "cp", pl.col("scene") + "|" + pl.col("category"), pl.lit(""), None, imp, clk))
    parts = [p for p in parts if p.height]
    if not parts:
        return empty_buckets()
    return (pl.concat(parts).group_by("view", "entity", "sub", "minute")
            .agg(pl.col("n1", "n2", "n3", "x").sum(), pl.col("last_ts").max()))


def _with_age(b: pl.DataFrame) -> pl.DataFrame:
    return b.with_columns(T=pl.col("last_ts").max().over("entity")).with_columns(
        age=pl.col("T") // MINUTE_MS - pl.col("minute"))


def _win(col: str, minutes: int) -> pl.Expr:
    return pl.col(col).filter(pl.col("age") < minutes).sum()


def _ts(col: str = "T") -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="ms").dt.replace_time_zone("UTC").alias(TIMESTAMP_FIELD)


def _ctr(clicks: pl.Expr, imps: pl.Expr, p: WindowParams) -> pl.Expr:
    return (clicks + p.ctr_prior * p.ctr_prior_weight) / (imps + p.ctr_prior_weight)


def _ranked_lists(b: pl.DataFrame, sort_by: list[str], descending: list[bool], limit: int, value_cols: dict[str, str]) -> pl.DataFrame:
    return (b.sort(["entity"] + sort_by, descending=[False] + descending)
            .group_by("entity", maintain_order=True)
            .agg([pl.col(src).head(limit).alias(dst) for src, dst in value_cols.items()]))


def _user_context(b: pl.DataFrame, p: WindowParams) -> pl.DataFrame:
    b = _with_age(b)
    totals = b.group_by("entity").agg(
        pl.col("T").first(),
        pl.col("n1").filter((pl.col("age") < H1) & (pl.col("sub") == "")).sum().alias("context_events_1h"),
        pl.col("n1").filter((pl.col("age") < H24) & (pl.col("sub") == "")).sum().alias("context_events_24h"))
    subs = (b.filter((pl.col("sub") != "") & (pl.col("age") < H24))
            .group_by("entity", "sub").agg(pl.col("n1").sum().alias("count"), pl.col("last_ts").max().alias("seen"))
            .with_columns(kind=pl.col("sub").str.slice(0, 2), value=pl.col("sub").str.slice(2)))
    out = totals
    for prefix, name, counts in (("s:", "recent_scenes", "recent_scene_counts_24h"),
                                 ("o:", "recent_objects", "recent_object_counts_24h"),
                                 ("i:", "recent_intent_categories", "recent_intent_category_counts_24h")):
        lists = _ranked_lists(subs.filter(pl.col("kind") == prefix), ["seen", "value"], [True, False], p.recent_n,
                              {"value": name, "count": counts})
        out = out.join(lists, on="entity", how="left")
        out = out.with_columns(pl.col(name).fill_null(pl.lit([], pl.List(pl.String))),
                               pl.col(counts).fill_null(pl.lit([], pl.List(pl.Int64))))
    return out


def _user_engagement(b: pl.DataFrame, p: WindowParams) -> pl.DataFrame:
    b = _with_age(b)
    total = b.filter(pl.col("sub") == "")
    T = b.group_by("entity").agg(pl.col("T").first())
    out = T.join(total.group_by("entity").agg(
        *[_win(c, w).alias(f"{k}_{n}") for n, w in (("1h", H1), ("24h", H24), ("7d", D7))
          for c, k in (("n1", "impressions"), ("n2", "clicks"))]), on="entity", how="left")
    cats = (b.filter((pl.col("sub") != "") & (pl.col("age") < D7)).group_by("entity", "sub").agg(
        *[_win(c, w).alias(f"engaged_category_{k}_{n}") for n, w in (("1h", H1), ("24h", H24), ("7d", D7))
          for c, k in (("n1", "impressions"), ("n2", "clicks"))], pl.col("last_ts").max().alias("seen")))
    value_cols = {"sub": "engaged_categories_7d"}
    value_cols.update({c: c for c in cats.columns if c.startswith("engaged_category_")})
    lists = _ranked_lists(cats, ["engaged_category_clicks_7d", "engaged_category_impressions_7d", "seen", "sub"],
                          [True, True, True, False], p.top_categories, value_cols)
    out = out.join(lists, on="entity", how="left")
    return out.with_columns(
        [pl.col(c).fill_null(0) for c in out.columns if c.endswith(("_1h", "_24h", "_7d")) and not c.startswith("engaged")]
        + [pl.col("engaged_categories_7d").fill_null(pl.lit([], pl.List(pl.String)))]
        + [pl.col(c).fill_null(pl.lit([], pl.List(pl.Int64))) for c in value_cols.values() if c != "engaged_categories_7d"])


def _counters(b: pl.DataFrame, p: WindowParams, spend: bool) -> pl.DataFrame:
    b = _with_age(b)
    aggs = [pl.col("T").first()]
    for n, w in (("1h", H1), ("24h", H24)):
        aggs += [_win("n1", w).alias(f"impressions_{n}"), _win("n2", w).alias(f"clicks_{n}"),
                 _win("n3", w).alias(f"conversions_{n}")]
        if spend:
            aggs.append(_win("x", w).alias(f"spend_{n}"))
    out = b.group_by("entity").agg(aggs)
    return out.with_columns(_ctr(pl.col("clicks_1h"), pl.col("impressions_1h"), p).alias("ctr_1h"),
                            _ctr(pl.col("clicks_24h"), pl.col("impressions_24h"), p).alias("ctr_24h"))


def _popularity(b: pl.DataFrame, p: WindowParams) -> pl.DataFrame:
    b = _with_age(b)
    out = b.group_by("entity").agg(pl.col("T").first(), _win("n1", H1).alias("events_1h"), _win("n1", H24).alias("events_24h"),
                                   _win("n2", H24).alias("impressions_24h"), _win("n3", H24).alias("clicks_24h"))
    return out.with_columns(_ctr(pl.col("clicks_24h"), pl.col("impressions_24h"), p).alias("ctr_24h"))


def compute_features(view: str, buckets: pl.DataFrame, params: WindowParams) -> pl.DataFrame:
    """One feature row per entity of feature view ``view`` from all its stored buckets.

    Columns: the view's entity key, ``event_timestamp`` (the entity's latest event) and
    the view's fields, in ``features.VIEWS_BY_NAME[view]`` order.
    """
    from features import VIEWS_BY_NAME

    spec = VIEWS_BY_NAME[view]
    if buckets.height == 0:
        return pl.DataFrame(schema={spec.entity: pl.String})
    compute = {
        "user_context": _user_context, "user_engagement": _user_engagement,
        "item_stats": lambda b, p: _counters(b, p, spend=False), "campaign_stats": lambda b, p: _counters(b, p, spend=True),
        "context_popularity": _popularity,
    }[view]
    out = compute(buckets, params)
    return out.select(pl.col("entity").alias(spec.entity), _ts(), *spec.feature_names).sort(spec.entity)
