"""Candidate generation from the campaign snapshot: ads whose targeting matches, and
catalog products by contextual relevance.

``Catalog`` is derived once per snapshot version (plain ``AdSpec``s, product words, a
scene → category map learnt from what campaigns that target a scene sell), so the
request path only filters and scores plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from serving._context import ContextIndex, RequestContext, words
from serving._targeting import AdSpec, Match, match


@dataclass(frozen=True)
class ProductCandidate:
    product: object          # campaigns.Product
    relevance: float
    explanation: str


@dataclass(frozen=True)
class AdCandidate:
    spec: AdSpec
    match: Match


@dataclass
class Catalog:
    version: object
    ads: tuple[AdSpec, ...]
    products: Mapping[str, object]
    products_by_category: Mapping[str, tuple]
    product_words: Mapping[str, frozenset[str]]
    scene_categories: Mapping[str, dict[str, float]]
    top_leaves: Mapping[str, tuple[str, ...]]

    @property
    def item_ids(self) -> list[str]:
        return [a.creative_id for a in self.ads] + list(self.products)

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
                scenes=frozenset(t.scenes), objects=frozenset(t.objects), keywords=frozenset(t.keywords),
                categories=frozenset(targeted), location_categories=frozenset(t.location_categories),
                regions=frozenset(t.regions), devices=frozenset(t.devices), excluded=frozenset(c.excluded_categories),
                start=c.schedule.start, end=c.schedule.end,
                dayparting=tuple((frozenset(w.weekdays), w.start_hour, w.end_hour) for w in c.schedule.dayparting),
                daily_budget=c.daily_plan(day), cap_day=c.frequency_cap.per_day, cap_week=c.frequency_cap.per_week,
                sensitive=sensitive or (bool(category) and index.is_sensitive(category)),
            ))
    return specs


def build_catalog(snapshot, index: ContextIndex, day) -> Catalog:
    """Derive the request-path view of a ``CampaignSnapshot`` (once per snapshot version)."""
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
    by_cat = {k: v for k, v in snapshot.products_by_category.items() if not index.is_sensitive(k)}
    top_leaves: dict[str, list[str]] = {}
    for cat in by_cat:
        top_leaves.setdefault(cat.split("/", 1)[0], []).append(cat)
    return Catalog(
        version=snapshot.version, ads=tuple(ads), products=snapshot.products, products_by_category=by_cat,
        product_words={sku: frozenset(words(f"{p.title} {p.brand}", limit=20)) for sku, p in snapshot.products.items()},
        scene_categories=scene_cats, top_leaves={k: tuple(v) for k, v in top_leaves.items()},
    )


def ad_candidates(catalog: Catalog, ctx: RequestContext, now: datetime, index: ContextIndex,
                  limit: int = 50) -> tuple[list[AdCandidate], dict[str, int]]:
    """Ads whose targeting matches, best ``limit`` by relevance × bid; plus refusal counts by reason."""
    out: list[AdCandidate] = []
    refused: dict[str, int] = {}
    for spec in catalog.ads:
        m = match(spec, ctx, now, index)
        if m.ok:
            out.append(AdCandidate(spec, m))
        else:
            refused[m.reason] = refused.get(m.reason, 0) + 1
    if len(out) > limit:
        out.sort(key=lambda c: (-(0.5 + c.match.relevance) * c.spec.bid, c.spec.creative_id))
        out = out[:limit]
    return out, refused


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
    """Up to ``limit`` in-stock products from the context's leaves (then their tops), by relevance."""
    cats = context_categories(catalog, ctx, affinity)
    if not cats:
        return []
    said = set(ctx.intent_words) | set(ctx.objects)
    scored: list[ProductCandidate] = []
    seen: set[str] = set()
    leaves = sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))
    # siblings of the strongest leaves fill up when the leaves alone are too few
    siblings = [(s, 0.25 * w) for c, w in leaves[:3] for s in catalog.top_leaves.get(c.split("/", 1)[0], ()) if s not in cats]
    for cat, weight in leaves + siblings:
        label = index.label(cat)
        for p in catalog.products_by_category.get(cat, ()):
            if p.sku in seen:
                continue
            seen.add(p.sku)
            hits = said & catalog.product_words.get(p.sku, frozenset())
            relevance = min(weight, 2.0) + 0.5 * len(hits)
            if ctx.price_cap is not None and p.price > ctx.price_cap:
                relevance -= 1.0
            if p.quality is not None:
                relevance += 0.3 * (p.quality - 0.5)
            if cat in ctx.categories:
                why = (f"because you are looking at {label}" if any(o in catalog.product_words.get(p.sku, ()) or
                       index.leaves_for([o]).get(cat) for o in ctx.objects) else f"because you asked for {label}")
            elif cat in affinity:
                why = f"because you liked {label} before"
            elif ctx.scene:
                why = f"popular at the {ctx.scene.replace('_', ' ')}"
            else:
                why = f"related to {label}"
            scored.append(ProductCandidate(p, relevance, why))
        if len(scored) >= limit * 3:
            break
    scored.sort(key=lambda c: (-c.relevance, c.product.sku))
    return scored[:limit]
