"""A logged impression data set for training and evaluation, with true probabilities.

The logging policy is deliberately simple and known: per request, ``n_ads`` creatives
and ``n_suggestions`` products, each slot taken from a *contextual* category (the
intent's, else a detected object's, else one drawn from the scene) with probability
``contextual_share`` and from a uniformly random category otherwise; a random item of
that category; slots ordered by contextual-first plus Gumbel noise. Labels are drawn
from the ground truth, whose probabilities are kept in the frame (``p_click``,
``p_conversion_given_click``, ``p_conversion``) for Bayes-optimal metrics.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from simulation._context import ContextBatch, _sample_by_group, sample_contexts
from simulation._truth import ResponseModel, true_probabilities
from simulation._world import World

APP_ID = "sim-assistant"


def _context_guess(world: World, ctx: ContextBatch, rng: np.random.Generator) -> np.ndarray:
    """Per request: the category a contextual candidate generator would look at first."""
    n = len(ctx)
    guess = ctx.intent_category.copy()
    for j in range(ctx.objects.shape[1]):
        o = ctx.objects[:, j]
        oc = np.where(o >= 0, world.object_category[np.maximum(o, 0)], -1)
        guess = np.where(guess >= 0, guess, oc)
    missing = np.flatnonzero(guess < 0)
    guess[missing] = _sample_by_group(0.02 + world.scene_category, ctx.scene[missing], rng)
    return guess


def _pick_items(world: World, kind: int, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    order, starts, counts = world.items_of_category(kind)
    c = counts[cats]
    item = order[np.minimum(starts[cats] + (rng.random(len(cats)) * np.maximum(c, 1)).astype(np.int64), len(order) - 1)]
    empty = c == 0
    if empty.any():  # no item of this kind in the category: any item of the kind
        item[empty] = order[rng.integers(0, len(order), int(empty.sum()))]
    return item


def simulate_logged_impressions(
    world: World,
    n_requests: int,
    seed: int,
    start_time: datetime | None = None,
    days: float = 7.0,
    *,
    n_ads: int = 2,
    n_suggestions: int = 3,
    contextual_share: float = 0.7,
    measured_only: bool = True,
    model: ResponseModel = ResponseModel(),
) -> pl.DataFrame:
    """Impressions of ``n_requests`` simulated requests, one row each, sorted by time.

    ``measured_only`` keeps the requests of users with measurement consent only (the
    feedback log holds nothing else); sensitive objects and intents are already removed
    from the observable columns, as the serving/streaming consent filter would.
    Columns: see docs/simulation.md ("Logged impressions").
    """
    rng = np.random.default_rng([seed, 202])
    ctx = sample_contexts(world, n_requests, seed, start_time, days)
    if measured_only:
        ctx = ctx.take(np.flatnonzero(ctx.consent_measurement))
    n = len(ctx)
    guess = _context_guess(world, ctx, rng)
    slots = n_ads + n_suggestions
    req = np.repeat(np.arange(n), slots)
    kind = np.tile(np.array([0] * n_ads + [1] * n_suggestions, dtype=np.int8), n)
    contextual = rng.random(n * slots) < contextual_share
    scene_draw = _sample_by_group(0.02 + world.scene_category, ctx.scene[req], rng)
    ctx_cat = np.where(rng.random(n * slots) < 0.6, guess[req], scene_draw)
    cats = np.where(contextual, ctx_cat, rng.integers(0, len(world.categories), n * slots))
    item = np.empty(n * slots, dtype=np.int64)
    for k in (0, 1):
        sel = kind == k
        item[sel] = _pick_items(world, k, cats[sel], rng)
    # positions within each surface: contextual first, randomised by Gumbel noise
    score = contextual.astype(np.float64) + rng.gumbel(size=n * slots)
    order = np.lexsort((-score, kind, req))
    req, kind, item, contextual = req[order], kind[order], item[order], contextual[order]
    surface_start = np.r_[0, np.flatnonzero((np.diff(req) != 0) | (np.diff(kind) != 0)) + 1]
    pos = np.arange(n * slots) - np.repeat(surface_start, np.diff(np.r_[surface_start, n * slots]))

    items = world.items
    user = ctx.user[req]
    exposure_key = np.where(kind == 0, items.campaign[item], len(world.campaigns) + items.product[item]).astype(np.int64)
    prior = (
        pl.DataFrame({"u": user, "k": exposure_key})
        .with_columns(pl.int_range(pl.len()).over(["u", "k"]).alias("prior"))["prior"].to_numpy()
    )  # rows are time-ordered (contexts are sorted), so this counts earlier exposures
    p_click, p_conv = true_probabilities(world, ctx, req, item, pos, prior, model=model, rng=rng)
    click = rng.random(len(req)) < p_click
    conversion = click & (rng.random(len(req)) < p_conv)
    return _frame(world, ctx, req, kind, item, pos, prior, p_click, p_conv, click, conversion, seed)


def request_frame(world: World, ctx: ContextBatch, *, redact_sensitive: bool = True) -> pl.DataFrame:
    """One row per request with the observable context columns (feedback-log names)."""
    vocab = pl.Series(world.object_vocab, dtype=pl.String)
    keep = ~world.object_sensitive if redact_sensitive else np.ones(len(world.object_vocab), dtype=bool)
    obj = ctx.objects
    shown = (obj >= 0) & keep[np.maximum(obj, 0)]
    columns = [vocab.gather(pl.Series(np.where(shown[:, j], obj[:, j], -1)).replace(-1, None)).alias(f"o{j}")
               for j in range(obj.shape[1])]
    objects = pl.DataFrame(columns).select(pl.concat_list(pl.all()).list.drop_nulls().alias("objects"))["objects"]
    intent_text = np.where(redact_sensitive & (ctx.intent_sensitive >= 0), "", ctx.intent_text)
    cats = np.array(world.categories + ("",), dtype=object)
    return pl.DataFrame({
        "user_id": world.users["user_id"].to_numpy()[ctx.user],
        "event_time": pl.Series(ctx.event_time_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").dt.cast_time_unit("us"),
        "device": np.where(ctx.device == 0, "glasses", "phone"),
        "scene": np.array(world.scenes, dtype=object)[ctx.scene],
        "objects": objects,
        "intent_text": intent_text.astype(str),
        "intent_category": cats[ctx.intent_category].astype(str),
        "location_category": ctx.location_category(world).astype(str),
        "region": ctx.region.astype(str),
        "local_hour": ctx.local_hour.astype(np.int32),
        "local_weekday": ctx.local_weekday.astype(np.int32),
        "consent_context": ctx.consent_context,
        "consent_personalization": ctx.consent_personalization,
        "consent_measurement": ctx.consent_measurement,
    })


def _frame(world, ctx, req, kind, item, pos, prior, p_click, p_conv, click, conversion, seed) -> pl.DataFrame:
    items = world.items
    requests = request_frame(world, ctx).with_columns(
        pl.format("req-{}-{}", pl.lit(seed), pl.int_range(pl.len()).cast(pl.String).str.zfill(8)).alias("request_id"))

    def lookup(values, idx: np.ndarray, name: str) -> pl.Series:
        # polars gathers strings far faster than numpy object arrays convert; index -1 -> last ("")
        table = pl.Series(name, list(values) + [""], dtype=pl.String)
        return table.gather(np.where(idx < 0, len(table) - 1, idx))

    imp = pl.DataFrame([
        lookup(("ad", "product"), kind.astype(np.int64), "item_kind"),
        lookup(items.item_id.tolist(), item, "item_id"),
        lookup(world.campaigns["campaign_id"].to_list(), items.campaign[item], "campaign_id"),
        lookup(world.advertisers["advertiser_id"].to_list(), items.advertiser[item], "advertiser_id"),
        lookup(world.products["product_sku"].to_list(), items.product[item], "product_sku"),
        lookup(world.categories, items.category[item], "category"),
        lookup(world.brands, items.brand[item], "brand"),
        pl.Series("price", items.price[item]),
        pl.Series("rating", items.rating[item]),
        pl.Series("position", pos.astype(np.int32)),
        pl.Series("prior_exposures", prior.astype(np.int32)),
        pl.Series("p_click", p_click),
        pl.Series("p_conversion_given_click", p_conv),
        pl.Series("p_conversion", p_click * p_conv),
        pl.Series("click", click),
        pl.Series("conversion", conversion),
        pl.Series("conversion_value", np.where(conversion, items.price[item], 0.0)),
    ])
    out = pl.concat([requests[req], imp], how="horizontal").with_columns(
        pl.lit(APP_ID).alias("app_id"),
        pl.format("imp-{}-{}", pl.lit(seed), pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias("event_id"))
    first = ["event_id", "event_time", "user_id", "request_id", "item_kind", "item_id", "campaign_id", "advertiser_id",
             "product_sku", "category", "brand", "price", "rating", "position"]
    return out.select(first + [c for c in out.columns if c not in first])


def to_feedback_events(world: World, frame: pl.DataFrame, *, model_version: str = "logging-policy") -> pl.DataFrame:
    """Explode logged impressions into feedback-log rows (impression, click, conversion).

    The result has exactly the columns of ``features.event_log_schema("feedback")``, so
    ``features.append_events(data_dir, "feedback", to_feedback_events(world, frame))``
    seeds the offline event log (delivery reports, experiment analysis, training sets).
    Spend follows the campaign's pricing: CPM bid / 1000 per ad impression, CPC bid per
    ad click; products cost nothing. Clicks come 2 s and conversions 10 min after the
    impression.
    """
    camp = world.campaigns.select(
        "campaign_id",
        pl.col("pricing").alias("_pricing"),
        pl.col("bid").alias("_bid"),
    )
    base = frame.join(camp, on="campaign_id", how="left", maintain_order="left").with_columns(
        pl.col("event_id").alias("impression_token"),
        pl.lit(model_version).alias("model_version"),
        pl.lit(None, dtype=pl.Float64).alias("pctr"),
        pl.lit("{}").alias("experiment_arms"),
        pl.lit(None, dtype=pl.Float64).alias("serve_ms"),      # a logging policy, not a server: no latency
    )
    imp_spend = pl.when(pl.col("_pricing") == "cpm").then(pl.col("_bid") / 1000.0).otherwise(0.0)
    click_spend = pl.when(pl.col("_pricing") == "cpc").then(pl.col("_bid")).otherwise(0.0)
    impressions = base.with_columns(pl.lit("impression").alias("type"), imp_spend.fill_null(0.0).alias("spend"),
                                    pl.lit(0.0).alias("conversion_value"))
    clicks = base.filter(pl.col("click")).with_columns(
        pl.lit("click").alias("type"), click_spend.fill_null(0.0).alias("spend"), pl.lit(0.0).alias("conversion_value"),
        (pl.col("event_id") + "-c").alias("event_id"), (pl.col("event_time") + pl.duration(seconds=2)).alias("event_time"))
    conversions = base.filter(pl.col("conversion")).with_columns(
        pl.lit("conversion").alias("type"), pl.lit(0.0).alias("spend"),
        (pl.col("event_id") + "-v").alias("event_id"), (pl.col("event_time") + pl.duration(minutes=10)).alias("event_time"))
    columns = [
        "event_id", "event_time", "user_id", "type", "impression_token", "request_id", "item_kind", "item_id",
        "campaign_id", "advertiser_id", "product_sku", "category", "position", "spend", "conversion_value",
        "model_version", "pctr", "app_id", "device", "scene", "objects", "intent_text", "location_category", "region",
        "local_hour", "local_weekday", "experiment_arms", "consent_personalization", "consent_measurement", "serve_ms",
    ]
    return pl.concat([impressions.select(columns), clicks.select(columns), conversions.select(columns)]).sort(
        "event_time", maintain_order=True)
