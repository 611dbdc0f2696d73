"""AdIndex (targeting as masks) selects exactly what ``match`` ad by ad would."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from campaigns import Taxonomy
from campaigns.vocab import SENSITIVE_LOCATIONS
from serving._ad_index import REASONS, AdIndex, explain
from serving._candidates import ad_candidates
from serving._context import ContextIndex, RequestContext
from serving._targeting import AdSpec, match

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)
LEAVES = ["sports/running_shoes", "sports/tennis", "food/coffee", "food/tea", "home/lamps", "health/pharmacy"]
SCENES = ["gym", "cafe", "street", "store", ""]
OBJECTS = ["running_shoes", "running_shoe", "cup", "cups", "lamp", "racket"]
KEYWORDS = ["trail running", "espresso", "green tea", "desk lamp", "tennis", "running"]
WORDS = ["trail", "running", "espresso", "green", "tea", "desk", "lamp", "tennis", "cheap"]


def _ad(rng: random.Random, i: int) -> AdSpec:
    some = lambda pool, k=2: frozenset(rng.sample(pool, rng.randint(1, k))) if rng.random() < 0.4 else frozenset()  # noqa: E731
    start = NOW + timedelta(hours=rng.choice([-48, -1, 1])) if rng.random() < 0.2 else None
    end = NOW + timedelta(hours=rng.choice([-1, 2, 48])) if rng.random() < 0.2 else None
    dayparting = (((frozenset(rng.sample(range(7), 3)), rng.randint(0, 12), rng.randint(12, 24)),)
                  if rng.random() < 0.2 else ())
    targeted = frozenset(rng.sample(LEAVES + ["sports", "food"], rng.randint(1, 2))) if rng.random() < 0.6 else frozenset()
    return AdSpec(
        creative_id=f"cr{rng.randint(0, 10_000):05d}", campaign_id=f"c{i}", advertiser_id=f"a{i % 7}", headline="h",
        landing_url="https://x.example", strategy=rng.choice(["CPC", "CPM"]), bid=rng.choice([0.5, 1.0, 2.0, 3.5]),
        category=rng.choice(LEAVES + [""]), scenes=some(SCENES[:-1]), objects=some(OBJECTS), keywords=some(KEYWORDS),
        categories=targeted, location_categories=some(["park", "mall", "home"]),
        regions=some(["US", "US-CA", "DE", "DE-BY-M"]), devices=some(["glasses", "phone"]),
        excluded=some(LEAVES + ["health"], 1), start=start, end=end, dayparting=dayparting,
        sensitive=rng.random() < 0.05,
    )


def _context(rng: random.Random) -> RequestContext:
    cats = {c: rng.choice([0.3, 1.0, 1.7, 2.5]) for c in rng.sample(LEAVES[:-1], rng.randint(0, 3))}
    return RequestContext(
        device=rng.choice(["glasses", "phone", ""]), scene=rng.choice(SCENES), objects=tuple(rng.sample(OBJECTS, rng.randint(0, 2))),
        intent_words=tuple(rng.sample(WORDS, rng.randint(0, 4))), location_category=rng.choice(["park", "mall", "home", ""]),
        region=rng.choice(["US", "US-CA", "US-CA-SF", "DE-BY-M", "DE", "FR", ""]), local_hour=rng.randint(0, 23),
        local_weekday=rng.randint(0, 6), categories=cats,
        seen_categories=frozenset(cats) | (frozenset({"health/pharmacy"}) if rng.random() < 0.2 else frozenset()),
    )


def _reference(ads, ctx, now, index, limit):
    """The rule, ad by ad: ads that target none of the context's categories are never checked."""
    out, refused = [], {}
    for i, ad in enumerate(ads):
        if ad.categories and not any(c in ad.categories or c.split("/", 1)[0] in ad.categories for c in ctx.categories):
            continue
        m = match(ad, ctx, now, index)
        if m.ok:
            out.append((i, m.relevance, ad.creative_id))
        else:
            refused[m.reason] = refused.get(m.reason, 0) + 1
    if len(out) > limit:
        out.sort(key=lambda t: (-(0.5 + t[1]) * ads[t[0]].bid, t[2]))
        out = out[:limit]
    return [(i, r) for i, r, _ in out], refused


@pytest.fixture(scope="module")
def index():
    return ContextIndex(Taxonomy(), SENSITIVE_LOCATIONS)


@pytest.mark.parametrize("seed", range(6))
def test_select_equals_match_ad_by_ad(seed, index):
    rng = random.Random(seed)
    ads = [_ad(rng, i) for i in range(300)]
    masks = AdIndex(ads)
    limit = rng.choice([5, 20, 300])
    seen_reasons = set()
    for _ in range(300):
        ctx = _context(rng)
        got, refused = masks.select(ctx, NOW, limit)
        want, want_refused = _reference(ads, ctx, NOW, index, limit)
        assert got == want, ctx
        assert refused == want_refused, ctx
        seen_reasons |= set(refused)
    # the random catalogs exercise every check but the one ad_candidates never reaches
    assert seen_reasons == set(REASONS) - {"categories"}


def test_ad_candidates_carry_relevance_and_shown_ads_get_matchs_explanation(index):
    rng = random.Random(7)
    ads = [_ad(rng, i) for i in range(200)]

    class _Catalog:       # ad_candidates reads only these three attributes
        ad_index = None
        ad_row0 = 7       # the products come first in the catalog's rows

    cat = _Catalog()
    cat.ads = tuple(ads)
    hits = 0
    for _ in range(100):
        ctx = _context(rng)
        cands, _ = ad_candidates(cat, ctx, NOW, index, limit=50)
        for c in cands:
            m = match(c.spec, ctx, NOW, index)
            assert m.ok and c.match.relevance == m.relevance and c.spec is ads[c.row - 7]
            assert explain(c.spec, ctx, NOW, index) == m.explanation != ""
            hits += 1
    assert cat.ad_index is not None and hits > 100
