"""Context normalisation (categories, sensitive signals) and the targeting match."""

from datetime import datetime, timedelta, timezone

import pytest

from campaigns.taxonomy import Taxonomy
from campaigns.vocab import SENSITIVE_LOCATIONS
from serving._context import ContextIndex, price_cap, words
from serving._targeting import AdSpec, match

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def index():
    return ContextIndex(Taxonomy(), SENSITIVE_LOCATIONS)


def ad(**kw):
    base = dict(creative_id="cr", campaign_id="c", advertiser_id="a", headline="h", landing_url="https://x",
                strategy="CPC", bid=1.0, category="sports/running_shoes")
    return AdSpec(**{**base, **kw})


def test_context_points_at_categories_from_objects_and_intent(index):
    ctx = index.context(objects=["running_shoe", "person"], intent_text="I need running shoes under 100 euros")
    assert ctx.top_category == "sports/running_shoes"
    assert ctx.price_cap == 100.0
    assert words("I need Running Shoes!") == ("running", "shoe")
    assert price_cap("no cap here") is None


def test_sensitive_signals_are_dropped_but_seen_by_exclusions(index):
    ctx = index.context(objects=["pharmacy", "running_shoe"], intent_text="where is the nearest pharmacy",
                        location_category="hospital")
    assert ctx.sensitive and "health/pharmacy" not in ctx.categories and "health/pharmacy" in ctx.seen_categories
    assert "pharmacy" not in ctx.objects and ctx.intent_text == "" and ctx.location_category == ""
    assert "sports/running_shoes" in ctx.categories


@pytest.mark.parametrize("spec,ctx_kw,reason", [
    (dict(start=NOW + timedelta(days=1)), {}, "schedule"),
    (dict(end=NOW), {}, "schedule"),
    (dict(dayparting=((frozenset({0}), 6, 9),)), dict(local_weekday=0, local_hour=10), "daypart"),
    (dict(devices=frozenset({"glasses"})), dict(device="phone"), "device"),
    (dict(regions=frozenset({"FR"})), dict(region="DE-BE"), "region"),
    (dict(location_categories=frozenset({"gym"})), dict(location_category="retail"), "location"),
    (dict(scenes=frozenset({"gym"})), dict(scene="kitchen"), "scene"),
    (dict(objects=frozenset({"running_shoe"})), dict(objects=["coffee_cup"]), "objects"),
    (dict(keywords=frozenset({"running shoes"})), dict(intent_text="I want coffee"), "keywords"),
    (dict(categories=frozenset({"electronics"})), dict(objects=["running_shoe"]), "categories"),
    (dict(excluded=frozenset({"health"})), dict(objects=["pharmacy"]), "excluded"),
    (dict(sensitive=True), {}, "sensitive"),
])
def test_each_rule_can_refuse(index, spec, ctx_kw, reason):
    result = match(ad(**spec), index.context(**ctx_kw), NOW, index)
    assert not result.ok and result.reason == reason


def test_everything_matching_serves_with_an_explanation(index):
    spec = ad(scenes=frozenset({"park"}), objects=frozenset({"running_shoe"}), keywords=frozenset({"running shoes"}),
              categories=frozenset({"sports"}), regions=frozenset({"DE"}), devices=frozenset({"glasses"}),
              location_categories=frozenset({"outdoors"}), dayparting=((frozenset({0}), 6, 9),),
              start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))
    ctx = index.context(device="glasses", scene="park", objects=["running_shoe"], intent_text="need running shoes",
                        location_category="outdoors", region="DE-BE", local_hour=7, local_weekday=0)
    result = match(spec, ctx, NOW, index)
    assert result.ok and result.relevance > 5
    assert result.explanation == "because you are looking at running shoe"


def test_untargeted_ad_serves_anywhere_but_earns_relevance_from_its_category(index):
    shoes = match(ad(), index.context(intent_text="running shoes"), NOW, index)
    coffee = match(ad(), index.context(intent_text="coffee"), NOW, index)
    assert shoes.ok and coffee.ok and shoes.relevance > coffee.relevance == 0
