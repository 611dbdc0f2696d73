"""Online feature rows for a benchmark world, shaped like a day of ingestion.

``bench.serve`` measures the request path. Without rows in Feast every user read misses
(the context-only fallback), the item statistics are empty and the refresher ships
nothing, so the benchmark would leave out work a live server does on every call:
decoding a user's features, drawing suggestions from the categories they engaged with,
and reading every candidate's statistics. These rows are synthetic but consistent with
the simulator's ground truth (a user's engaged categories are their strongest
interests, scenes their preferred ones) and go through the streaming stage's own
``FeastSink``, so they are stored exactly as ingestion stores them.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl

from features import TIMESTAMP_FIELD, VIEWS_BY_NAME


def _frame(view: str, rows: dict[str, list], now: datetime) -> pl.DataFrame:
    spec = VIEWS_BY_NAME[view]
    n = len(rows[spec.entity])
    data = {spec.entity: rows[spec.entity], TIMESTAMP_FIELD: [now] * n}
    data.update({name: rows[name] for name in spec.feature_names})
    return pl.DataFrame(data, schema_overrides={TIMESTAMP_FIELD: pl.Datetime("us", "UTC")})


def _counts(rng, n: int, mean: float) -> list[int]:
    return rng.poisson(mean, n).astype(int).tolist()


def _stats(rng, ids: list[str], mean_24h: float, ctr: float, spend_per_imp: float | None = None) -> dict[str, list]:
    """Item or campaign statistics: impressions, clicks, conversions and CTR over 1 h and 24 h."""
    n = len(ids)
    imp24 = rng.poisson(mean_24h, n)
    clk24 = rng.binomial(imp24, ctr)
    imp1 = rng.binomial(imp24, 1 / 24)
    clk1 = rng.binomial(np.minimum(clk24, imp1), 0.5)
    rows: dict[str, list] = {
        "impressions_1h": imp1.tolist(), "clicks_1h": clk1.tolist(),
        "conversions_1h": rng.binomial(clk1, 0.1).tolist(),
        "impressions_24h": imp24.tolist(), "clicks_24h": clk24.tolist(),
        "conversions_24h": rng.binomial(clk24, 0.1).tolist(),
        "ctr_1h": [float(c / i) if i else None for c, i in zip(clk1, imp1)],
        "ctr_24h": [float(c / i) if i else None for c, i in zip(clk24, imp24)],
    }
    if spend_per_imp is not None:
        rows["spend_1h"] = (imp1 * spend_per_imp).astype(float).tolist()
        rows["spend_24h"] = (imp24 * spend_per_imp).astype(float).tolist()
    return rows


def write_world_features(settings, world, users: list[str], *, seed: int = 7,
                         now: datetime | None = None) -> dict[str, int]:
    """Write user rows for ``users`` (world user ids; stored under their pseudonyms, as
    serving reads them) and statistics for every creative, product and campaign of
    ``world``. Returns rows written per view."""
    from features import open_store
    from privacy import pseudonymize
    from streaming._feast import FeastSink

    now = now or datetime.now(timezone.utc)
    rng = np.random.default_rng(seed)
    sink = FeastSink(open_store(settings), settings.feast_dir)
    cats, scenes = world.categories, world.scenes
    objects = [o for o, c in zip(world.object_vocab, world.object_category) if c >= 0]
    index = {u: i for i, u in enumerate(world.users["user_id"].to_list())}
    rows = [index[u] for u in users]
    keys = [pseudonymize(u, settings.privacy.hmac_key) for u in users]
    interest = world.latent.user_interest[rows]
    scene_pref = world.latent.user_scene_pref[rows]
    top_cats = np.argsort(-interest, axis=1)[:, :5]
    top_scenes = np.argsort(-scene_pref, axis=1)[:, :3]
    n = len(users)

    def lists(k: int, mean: float) -> list[list[int]]:
        return [sorted(rng.poisson(mean, k).astype(int).tolist(), reverse=True) for _ in range(n)]

    context = {
        "user_id": keys,
        "recent_scenes": [[scenes[j] for j in r] for r in top_scenes], "recent_scene_counts_24h": lists(3, 6),
        "recent_objects": [list(rng.choice(objects, 4, replace=False)) for _ in range(n)],
        "recent_object_counts_24h": lists(4, 3),
        "recent_intent_categories": [[cats[j] for j in r[:2]] for r in top_cats],
        "recent_intent_category_counts_24h": lists(2, 2),
        "context_events_1h": _counts(rng, n, 2), "context_events_24h": _counts(rng, n, 30),
    }
    engagement: dict[str, list] = {"user_id": keys, "engaged_categories_7d": [[cats[j] for j in r] for r in top_cats]}
    for w, mean in (("1h", 2), ("24h", 25), ("7d", 150)):
        imps = _counts(rng, n, mean)
        engagement[f"impressions_{w}"] = imps
        engagement[f"clicks_{w}"] = rng.binomial(imps, 0.03).tolist()
        per_cat = [sorted(rng.poisson(max(mean / 5, 1), 5).astype(int).tolist(), reverse=True) for _ in range(n)]
        engagement[f"engaged_category_impressions_{w}"] = per_cat
        engagement[f"engaged_category_clicks_{w}"] = [rng.binomial(p, 0.05).astype(int).tolist() for p in per_cat]
    written = {}
    for view, data in (("user_context", context), ("user_engagement", engagement)):
        sink.write_online(view, _frame(view, data, now))
        written[view] = n
    items = world.creatives["creative_id"].to_list() + world.products["product_sku"].to_list()
    campaigns = world.campaigns["campaign_id"].to_list()
    item_rows = {"item_id": items, **_stats(rng, items, 40, 0.03)}
    campaign_rows = {"campaign_id": campaigns, **_stats(rng, campaigns, 400, 0.03, spend_per_imp=0.002)}
    sink.write_online("item_stats", _frame("item_stats", item_rows, now))
    sink.write_online("campaign_stats", _frame("campaign_stats", campaign_rows, now))
    written["item_stats"], written["campaign_stats"] = len(items), len(campaigns)
    return written
