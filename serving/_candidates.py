"""Candidate generation from the campaign snapshot: ads whose targeting matches, and
catalog products by contextual relevance.

``Catalog`` is derived once per snapshot version (plain ``AdSpec``s, product words, a
scene → category map learnt from what campaigns that target a scene sell), so the
request path only filters and scores plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from serving._context import ContextIndex, RequestContext, words
from serving._ad_index import AdIndex
from serving._targeting import AdSpec, Match


class ProductCandidate(NamedTuple):
    """A product and why it is suggested (a tuple: ~200 are built per request)."""

    product: object          # campaigns.Product
    relevance: float
    explanation: str
    row: int = -1
    """The product's row in ``Catalog.items`` (-1: a candidate built without a catalog)."""


class AdCandidate(NamedTuple):
    """An ad whose targeting matched, with the match (its relevance; the explanation is asked
    for the ads shown only, see ``ad_candidates``)."""

    spec: AdSpec
    match: Match
    row: int = -1
    """The ad's row in ``Catalog.items`` (``Catalog.ad_row0`` + its position in ``Catalog.ads``;
    -1: built without a catalog)."""


@dataclass
class Catalog:
    version: object
    ads: tuple[AdSpec, ...]
    products: Mapping[str, object]
    products_by_category: Mapping[str, tuple]
    product_words: Mapping[str, frozenset[str]]
    scene_categories: Mapping[str, dict[str, float]]
    top_leaves: Mapping[str, tuple[str, ...]]
    word_index: Mapping[str, tuple[str, ...]]
    """Title/brand word → skus (words shared by more than 300 products — generic ones — are left out)."""
    budgets: Mapping[str, float | None]
    """Campaign id → today's budget (``None``: no daily figure, not paced)."""
    product_heads: Mapping[str, tuple] | None = None
    """Leaf → ``(product, sku, price, quality term, row in items, title and brand words)`` per product of
    ``products_by_category`` (same order): the request path scores ~200 of them without attribute or
    dict lookups (each one a likely cache miss among 53k products)."""
    named_products: Mapping[str, tuple] | None = None
    """``word_index`` with the products resolved: word → ``(product, sku, category, price, quality term
    or None, row in items, title and brand words)`` of its in-stock products (a request checks ~100 of
    them; attribute lookups add up)."""
    items: Mapping[str, list] | None = None
    """Every product then every servable creative as columns of the ranker's item attributes
    (``item_id``, ``item_kind``, ``advertiser_id``, ``campaign_id``, ``category``, ``brand``,
    ``price``, ``rating``): a registered model encodes them once per snapshot, and a request
    hands it row numbers (``models.Scorer.score_items``)."""
    ad_rows: Mapping[str, int] | None = None
    """Creative id → its row in ``items``."""
    product_rows: Mapping[str, int] | None = None
    """Sku → its row in ``items``."""
    stats: object | None = None
    """``StatsColumns`` of the items' statistics, kept current by ``ItemFeatures`` (None: read
    the statistics per candidate)."""
    ad_index: AdIndex | None = None
    """``ads`` as targeting masks (built on first use when a catalog is made by hand)."""
    category_codes: np.ndarray | None = None
    """Per row of ``items``: the index of its category in ``categories``."""
    categories: Mapping[str, int] | None = None
    """Category → code in ``category_codes``."""
    product_side: "ProductSide | None" = None
    """What was derived from the products alone; the next snapshot reuses it while its
    products are the same objects (``build_catalog``)."""

    @property
    def sku_rank(self) -> np.ndarray | None:
        """Per product row of ``items``: the product's place in sku order (None for a catalog
        built by hand): ties between equal scores break by sku in one ``np.lexsort``."""
        return self.product_side.sku_rank if self.product_side is not None else None

    @property
    def ad_row0(self) -> int:
        """The row of ``ads[0]`` in ``items`` (the products come first)."""
        return len(self.product_rows) if self.product_rows else 0

    @property
    def item_ids(self) -> list[str]:
        return list(self.products) + [a.creative_id for a in self.ads]

    @property
    def campaign_ids(self) -> list[str]:
        return sorted({a.campaign_id for a in self.ads})


def _ad_specs(snapshot, index: ContextIndex, day) -> list[AdSpec]:
    specs = []
    for c in snapshot.campaigns.values():
        t = c.targeting
        targeted = tuple(t.categories)
        sensitive = any(index.is_sensitive(x) for x in targeted)
        for cr in c.active_creatives():
            product = snapshot.products.get(cr.product_sku) if cr.product_sku else None
            category = product.category if product is not None else next((x for x in targeted if "/" in x), "")
            specs.append(AdSpec(
                creative_id=cr.id, campaign_id=c.id, advertiser_id=c.advertiser_id, headline=cr.headline,
                landing_url=cr.landing_url, strategy=c.bid.strategy, bid=float(c.bid.amount), body=cr.body,
                image_url=cr.image_url, call_to_action=cr.call_to_action, product_sku=cr.product_sku or "",
                category=category, brand=getattr(product, "brand", "") or "", price=float(getattr(product, "price", 0.0) or 0.0),
                rating=float(getattr(product, "quality", 0.0) or 0.0),
                scenes=frozenset(t.scenes), objects=frozenset(t.objects), keywords=frozenset(t.keywords),
                categories=frozenset(targeted), location_categories=frozenset(t.location_categories),
                regions=frozenset(t.regions), devices=frozenset(t.devices), excluded=frozenset(c.excluded_categories),
                start=c.schedule.start, end=c.schedule.end,
                dayparting=tuple((frozenset(w.weekdays), w.start_hour, w.end_hour) for w in c.schedule.dayparting),
                daily_budget=c.daily_plan(day), cap_day=c.frequency_cap.per_day, cap_week=c.frequency_cap.per_week,
                cap_skip_uncounted=c.frequency_cap.skip_uncounted,
                sensitive=sensitive or (bool(category) and index.is_sensitive(category)),
            ))
    return specs


def _heads(products, rows: Mapping[str, int], pwords: Mapping[str, frozenset]) -> tuple:
    """``Catalog.product_heads`` rows of one leaf's products (row -1: not in ``Catalog.items``)."""
    empty: frozenset = frozenset()
    return tuple((p, p.sku, p.price, 0.3 * (p.quality - 0.5) if p.quality is not None else 0.0, rows.get(p.sku, -1),
                  pwords.get(p.sku, empty))
                 for p in products)


def _named(products, skus, rows: Mapping[str, int], pwords: Mapping[str, frozenset]) -> tuple:
    """``Catalog.named_products`` rows of one word's skus."""
    empty: frozenset = frozenset()
    out = []
    for sku in skus:
        p = products[sku]
        if p.availability != "out_of_stock":
            out.append((p, sku, p.category, p.price, 0.3 * (p.quality - 0.5) if p.quality is not None else None,
                        rows.get(sku, -1), pwords.get(sku, empty)))
    return tuple(out)


def item_attributes(specs: Sequence[AdSpec], products: Sequence) -> dict[str, list]:
    """The ranker's item attributes of ``specs`` then ``products``, as columns: what a merged
    ranker row carries for an ad (its product's) or a suggested product."""
    n_ads = len(specs)
    return {
        "item_id": [a.creative_id for a in specs] + [p.sku for p in products],
        "item_kind": ["ad"] * n_ads + ["product"] * len(products),
        "advertiser_id": [a.advertiser_id for a in specs] + [p.advertiser_id or "" for p in products],
        "campaign_id": [a.campaign_id for a in specs] + [""] * len(products),
        "category": [a.category for a in specs] + [p.category for p in products],
        "brand": [a.brand for a in specs] + [p.brand for p in products],
        "price": [a.price for a in specs] + [p.price for p in products],
        "rating": [a.rating for a in specs] + [float(p.quality or 0.0) for p in products],
    }


def _item_columns(ads, products) -> tuple[dict[str, list], dict[str, int], dict[str, int]]:
    """``Catalog.items`` (every product, then every creative) and each one's row."""
    prods = list(products.values())
    items, ad_rows = _append_ads(item_attributes((), prods), len(prods), ads)
    return items, ad_rows, {p.sku: j for j, p in enumerate(prods)}


def _append_ads(product_columns: Mapping[str, list], n_products: int, ads) -> tuple[dict[str, list], dict[str, int]]:
    """The products' item columns with the ads after them, and each ad's row."""
    ad_columns = item_attributes(ads, ())
    return ({k: product_columns[k] + ad_columns[k] for k in product_columns},
            {a.creative_id: n_products + i for i, a in enumerate(ads)})


@dataclass(frozen=True)
class ProductSide:
    """The part of a ``Catalog`` that depends on the products alone: nearly all of the build
    for 53k products (1.44 s of CPU from scratch, 0.085 s reusing this; bench.serve's world).
    Products come first in ``Catalog.items``, so their rows do not move when the ads do, and
    a campaign edit (a pause, a budget, a bid: the common change) rebuilds only the ad side."""

    products: Mapping[str, object]
    """The snapshot's ``products`` this was derived from (reused while it is the same object)."""
    source_by_category: Mapping[str, tuple]
    """The snapshot's ``products_by_category`` (likewise)."""
    by_category: Mapping[str, tuple]
    words: Mapping[str, frozenset[str]]
    word_index: Mapping[str, tuple[str, ...]]
    top_leaves: Mapping[str, tuple[str, ...]]
    named: Mapping[str, tuple]
    heads: Mapping[str, tuple]
    columns: Mapping[str, list]
    rows: Mapping[str, int]
    sku_rank: np.ndarray


def product_side(snapshot, index: ContextIndex) -> ProductSide:
    """Everything ``build_catalog`` derives from the products (see ``ProductSide``)."""
    products = snapshot.products
    # best-rated first, so a request reads only the head of each leaf
    by_cat = {k: tuple(sorted(v, key=lambda p: (-(p.quality or 0.5), p.sku)))
              for k, v in snapshot.products_by_category.items() if not index.is_sensitive(k)}
    product_words = {sku: frozenset(words(f"{p.title} {p.brand}", limit=20)) for sku, p in products.items()}
    word_index: dict[str, list[str]] = {}
    for sku, ws in product_words.items():
        for w in ws:
            word_index.setdefault(w, []).append(sku)
    top_leaves: dict[str, list[str]] = {}
    for cat in by_cat:
        top_leaves.setdefault(cat.split("/", 1)[0], []).append(cat)
    kept_words = {w: tuple(skus) for w, skus in word_index.items() if len(skus) <= 300}
    prods = list(products.values())
    rows = {p.sku: j for j, p in enumerate(prods)}
    sku_rank = np.zeros(len(prods), dtype=np.int64)
    sku_rank[[rows[sku] for sku in sorted(rows)]] = np.arange(len(rows))
    return ProductSide(
        products=products, source_by_category=snapshot.products_by_category, by_category=by_cat,
        words=product_words, word_index=kept_words, top_leaves={k: tuple(v) for k, v in top_leaves.items()},
        named={w: _named(products, skus, rows, product_words) for w, skus in kept_words.items()},
        heads={k: _heads(v, rows, product_words) for k, v in by_cat.items()},
        columns=item_attributes((), prods), rows=rows, sku_rank=sku_rank)


def build_catalog(snapshot, index: ContextIndex, day, previous: Catalog | None = None) -> Catalog:
    """Derive the request-path view of a ``CampaignSnapshot`` (once per snapshot version).

    ``previous`` (the catalog being replaced) lends its ``ProductSide`` when the snapshot's
    products are the very objects it was derived from (``campaigns.load_snapshot`` keeps
    them while the store's products version has not moved)."""
    side = previous.product_side if previous is not None else None
    if (side is None or side.products is not snapshot.products
            or side.source_by_category is not snapshot.products_by_category):
        side = product_side(snapshot, index)
    ads = _ad_specs(snapshot, index, day)
    scene_cats: dict[str, dict[str, float]] = {}
    for a in ads:
        cats = [a.category] if a.category else [x for x in a.categories if "/" in x]
        for scene in a.scenes:
            for cat in cats:
                if cat and not index.is_sensitive(cat):
                    scene_cats.setdefault(scene, {})[cat] = scene_cats.get(scene, {}).get(cat, 0.0) + 1.0
    for scene, cats in scene_cats.items():   # normalise: the scene's most advertised leaf weighs 0.6
        top = max(cats.values())
        scene_cats[scene] = {c: 0.6 * w / top for c, w in cats.items()}
    items, ad_rows = _append_ads(side.columns, len(side.rows), ads)
    categories: dict[str, int] = {}
    codes = np.array([categories.setdefault(c, len(categories)) for c in items["category"]], dtype=np.int64)
    return Catalog(
        items=items, ad_rows=ad_rows, product_rows=side.rows, category_codes=codes, categories=categories,
        product_side=side, named_products=side.named,
        budgets={a.campaign_id: a.daily_budget for a in ads},
        ad_index=AdIndex(ads),
        version=snapshot.version, ads=tuple(ads), products=snapshot.products, products_by_category=side.by_category,
        product_heads=side.heads, product_words=side.words, word_index=side.word_index,
        scene_categories=scene_cats, top_leaves=side.top_leaves,
    )


def ad_candidates(catalog: Catalog, ctx: RequestContext, now: datetime, index: ContextIndex,
                  limit: int = 50) -> tuple[list[AdCandidate], dict[str, int]]:
    """Ads whose targeting matches, best ``limit`` by relevance × bid; plus refusal counts by reason.

    The candidates' ``match`` carries the relevance but no explanation: ``explain`` gives it
    for the ads that are shown (``AdIndex``, serving._ad_index)."""
    ads = catalog.ad_index
    if ads is None:
        ads = catalog.ad_index = AdIndex(catalog.ads)
    selected, refused = ads.select(ctx, now, limit)
    specs, row0 = catalog.ads, catalog.ad_row0
    return [AdCandidate(specs[i], Match(True, "ok", relevance), row0 + i) for i, relevance in selected], refused


def context_categories(catalog: Catalog, ctx: RequestContext, affinity: Mapping[str, float] = {}) -> dict[str, float]:
    """Leaves to draw suggestions from: the context's own, the scene's, the user's (weights add)."""
    cats = dict(ctx.categories)
    for cat, w in catalog.scene_categories.get(ctx.scene, {}).items():
        cats[cat] = cats.get(cat, 0.0) + w
    for cat, w in affinity.items():
        cats[cat] = cats.get(cat, 0.0) + 0.5 * w
    return cats


def product_candidates(catalog: Catalog, ctx: RequestContext, index: ContextIndex, *,
                       affinity: Mapping[str, float] = {}, limit: int = 200) -> list[ProductCandidate]:
    """Up to ``limit`` products from the context's leaves (then their tops), by relevance.

    First the in-stock products the user named (brand or title words) in the relevant
    leaves, then the head (best rated) of each leaf, strongest first, each leaf a quota by
    weight. This runs for ~200 products per request, so it works on rows precomputed per
    snapshot (``Catalog.product_heads``, ``Catalog.named_products``), builds each leaf's
    explanation only when the leaf is used, and sorts plain tuples.
    """
    cats = context_categories(catalog, ctx, affinity)
    if not cats:
        return []
    said = set(ctx.intent_words) | set(ctx.objects)
    leaves = sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))
    # siblings of the strongest leaves fill up when the leaves alone are too few
    siblings = [(s, 0.25 * w) for c, w in leaves[:3] for s in catalog.top_leaves.get(c.split("/", 1)[0], ()) if s not in cats]
    order = leaves + siblings
    weights = dict(order)            # a sibling listed twice keeps its last weight, as its explanation does
    whys: dict[str, tuple[float, str]] = {}
    seen_cats = index.leaves_for(ctx.objects)

    def why_of(cat: str) -> tuple[float, str]:
        hit = whys.get(cat)
        if hit is None:
            label = index.label(cat)
            if cat in ctx.categories:
                why = f"because you are looking at {label}" if cat in seen_cats else f"because you asked for {label}"
            elif cat in affinity:
                why = f"because you liked {label} before"
            elif ctx.scene:
                why = f"popular at the {ctx.scene.replace('_', ' ')}"
            else:
                why = f"related to {label}"
            hit = whys[cat] = (min(weights[cat], 2.0), why)
        return hit

    cap = ctx.price_cap
    scored: list[tuple] = []         # (-relevance, sku, product, explanation, row): sorts without a key function
    append = scored.append
    seen: set[str] = set()
    # products named by the user's words (brand, title) in the relevant leaves, wherever they rank
    named = catalog.named_products
    if named is None:            # a Catalog built by hand (tests)
        named = {w: _named(catalog.products, skus, {}, catalog.product_words) for w, skus in catalog.word_index.items()}
    # in the order the words were said, objects after: a set's order follows the process's
    # hash seed, and which named products make the cut must not differ between processes
    for w in dict.fromkeys((*ctx.intent_words, *ctx.objects)):
        if len(scored) >= limit:
            break
        for p, sku, cat, price, qterm, row, pwords in named.get(w, ()):
            if sku not in seen and cat in weights:
                seen.add(sku)
                base, why = why_of(cat)
                relevance = base + 0.5 * len(said & pwords)
                if cap is not None and price > cap:
                    relevance -= 1.0
                if qterm is not None:
                    relevance += qterm
                append((-relevance, sku, p, why, row))
                if len(scored) >= limit:
                    break
    # then the head (best rated) of each leaf, strongest leaves first, each leaf a quota by weight
    total = sum(w for _, w in order) or 1.0
    heads = catalog.product_heads
    if heads is None:   # a Catalog built by hand (tests): derive the rows of the leaves needed
        heads = {c: _heads(catalog.products_by_category.get(c, ()), {}, catalog.product_words) for c, _ in order}
    for cat, weight in order:
        quota = max(20, round(limit * weight / total))
        rows = heads.get(cat, ())[:quota]
        if rows:
            base, why = why_of(cat)
            for p, sku, price, qterm, row, pwords in rows:
                if sku in seen:
                    continue
                seen.add(sku)
                relevance = base + qterm
                if said and not said.isdisjoint(pwords):
                    relevance += 0.5 * len(said & pwords)
                if cap is not None and price > cap:
                    relevance -= 1.0
                append((-relevance, sku, p, why, row))
        if len(scored) >= limit:
            break
    scored.sort()
    return [ProductCandidate(p, -neg, why, row) for neg, _, p, why, row in scored[:limit]]
