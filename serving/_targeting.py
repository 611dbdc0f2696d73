"""Which ads may serve in a request: a pure match of an ``AdSpec`` against a ``RequestContext``.

Targeting semantics follow ``campaigns.Targeting``: every list is an OR, lists combine
with AND, an empty list means any. On top: schedule and dayparting (the user's local
time), brand-safety exclusions (against every category the context points at, sensitive
ones included) and the rule that a sensitive category never serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from serving._context import ContextIndex, RequestContext, singular, words


@dataclass(frozen=True)
class AdSpec:
    """One servable creative with its campaign's rules (plain data, built from the campaign snapshot)."""

    creative_id: str
    campaign_id: str
    advertiser_id: str
    headline: str
    landing_url: str
    strategy: str
    """``CPC`` or ``CPM``."""
    bid: float
    body: str = ""
    image_url: str = ""
    call_to_action: str = ""
    product_sku: str = ""
    category: str = ""
    """Leaf category of the ad (its product's, else the campaign's first targeted leaf)."""
    brand: str = ""
    price: float = 0.0
    rating: float = 0.0
    """The ad's product's quality in [0, 1] (the ranker's ``rating``); 0 = none known."""
    scenes: frozenset[str] = frozenset()
    objects: frozenset[str] = frozenset()
    keywords: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    """Targeted leaves (``top/leaf``) or whole tops (``top``)."""
    location_categories: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()
    start: datetime | None = None
    end: datetime | None = None
    dayparting: tuple[tuple[frozenset[int], int, int], ...] = ()
    """(weekdays, start_hour, end_hour) windows of the user's local time; empty = always."""
    daily_budget: float | None = None
    cap_day: int | None = None
    cap_week: int | None = None
    cap_skip_uncounted: bool = False
    """Not served to users without personalization consent (their impressions cannot be counted)."""
    sensitive: bool = False
    """True when the ad's category or a targeted one is sensitive (it never serves)."""
    keyword_words: tuple[tuple[str, frozenset[str]], ...] = field(init=False, repr=False, compare=False)
    """``keywords`` in sorted order with their content words: derived once here rather than
    per request (``match`` runs for ~120 ads per request)."""

    def __post_init__(self) -> None:
        pairs = tuple((k, frozenset(kw)) for k in sorted(self.keywords) if (kw := words(k.replace("_", " "))))
        object.__setattr__(self, "keyword_words", pairs)


class Match(NamedTuple):
    """The verdict on one ad in one request (a tuple: ~120 are made per request)."""

    ok: bool
    reason: str
    """Why not (``schedule``, ``daypart``, ``device`` ...), or the strongest match when ok."""
    relevance: float = 0.0
    """How well the context matches (used by the fallback ranker and explanations)."""
    explanation: str = ""


_NO = {reason: Match(False, reason) for reason in (
    "sensitive", "schedule", "daypart", "device", "region", "location", "excluded", "scene", "objects", "keywords",
    "categories")}


def _cat_hit(targets: frozenset[str], category: str) -> bool:
    return category in targets or category.split("/", 1)[0] in targets


def match(ad: AdSpec, ctx: RequestContext, now: datetime, index: ContextIndex) -> Match:
    """Does ``ad`` serve in ``ctx`` at ``now``? Pure."""
    if ad.sensitive:
        return _NO["sensitive"]
    if (ad.start is not None and now < ad.start) or (ad.end is not None and now >= ad.end):
        return _NO["schedule"]
    if ad.dayparting and not any(ctx.local_weekday in days and lo <= ctx.local_hour < hi
                                 for days, lo, hi in ad.dayparting):
        return _NO["daypart"]
    if ad.devices and ctx.device not in ad.devices:
        return _NO["device"]
    if ad.regions and not any(ctx.region == r or ctx.region.startswith(r + "-") for r in ad.regions):
        return _NO["region"]
    if ad.location_categories and ctx.location_category not in ad.location_categories:
        return _NO["location"]
    if ad.excluded and any(_cat_hit(ad.excluded, c) for c in ctx.seen_categories):
        return _NO["excluded"]
    relevance, why = 0.0, ""
    if ad.scenes:
        if ctx.scene not in ad.scenes:
            return _NO["scene"]
        relevance, why = relevance + 1.0, why or f"because you are at the {ctx.scene.replace('_', ' ')}"
    if ad.objects:
        hits = [o for o in ctx.objects if o in ad.objects or singular(o) in ad.objects]
        if not hits:
            return _NO["objects"]
        relevance += 2.0
        why = f"because you are looking at {hits[0].replace('_', ' ')}"
    if ad.keywords:
        said = ctx.intent_words
        hits = [k for k, kw in ad.keyword_words if kw.issubset(said)]
        if not hits:
            return _NO["keywords"]
        relevance += 2.0
        why = why if "looking at" in why else f"because you asked for {hits[0]}"
    if ad.categories:
        targets = ad.categories
        hits = [(w, c) for c, w in ctx.categories.items() if c in targets or c.split("/", 1)[0] in targets]
        if not hits:
            return _NO["categories"]
        w, c = max(hits)
        relevance += min(w, 2.0)
        why = why or f"because you are interested in {index.label(c)}"
    # untargeted dimensions still earn relevance from the ad's own category
    if ad.category and ad.category in ctx.categories:
        relevance += min(ctx.categories[ad.category], 2.0)
        why = why or f"related to {index.label(ad.category)}"
    return Match(True, "ok", relevance, why or "sponsored")
