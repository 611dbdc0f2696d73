"""Every validation rule: the field it names and the fix its message names."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from campaigns import (
    Advertiser, Campaign, Product, ValidationError, advertiser_problems, campaign_problems, product_problems,
)
from campaigns._validation import check_transition

NOW = datetime.now(timezone.utc)


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    return doc


def test_valid_campaign_has_no_problems(campaign_doc, rules):
    assert campaign_problems(Campaign.from_doc(campaign_doc()), rules, now=NOW) == []


CASES = [
    # (id, path, value, expected field, expected fix substring)
    ("daily_not_positive", "budget.daily", 0.0, "budget.daily", "set a daily budget above 0"),
    ("daily_negative", "budget.daily", -5.0, "budget.daily", "set a daily budget above 0"),
    ("lifetime_not_positive", "budget.lifetime", -1.0, "budget.lifetime", "set a lifetime budget above 0"),
    ("no_budget", "budget", {"currency": "EUR"}, "budget", "set budget.daily and/or budget.lifetime"),
    ("lifetime_below_daily", "budget.lifetime", 50.0, "budget.lifetime", "set budget.lifetime to at least 100.0"),
    ("unknown_currency", "budget.currency", "XYZ", "budget.currency", "use one of"),
    ("end_before_start", "schedule.end", NOW - timedelta(days=3), "schedule.end", "set schedule.end after"),
    ("bid_not_positive", "bid.amount", 0.0, "bid.amount", "set a CPC bid above 0"),
    ("bid_above_cap", "bid.amount", 51.0, "bid.amount", "lower it to at most 50.0"),
    ("cpm_bid_above_cap", "bid", {"strategy": "CPM", "amount": 75.0}, "bid.amount", "lower it to at most 50.0"),
    ("cpc_above_daily", "budget", {"daily": 0.5, "currency": "EUR"}, "bid.amount", "raise budget.daily"),
    ("unknown_category", "targeting.categories", ["sports/running_shoez"], "targeting.categories", "did you mean"),
    ("unknown_top", "targeting.categories", ["spaceships"], "targeting.categories", "campaigns categories"),
    ("sensitive_leaf", "targeting.categories", ["health/pharmacy"], "targeting.categories", "remove it"),
    ("sensitive_top", "targeting.categories", ["religion"], "targeting.categories", "may never be targeted"),
    ("sensitive_keyword", "targeting.keywords", ["dating"], "targeting", "may never be targeted"),
    ("unknown_region", "targeting.regions", ["XX"], "targeting.regions", "such as 'DE' or 'DE-BE'"),
    ("unknown_subregion", "targeting.regions", ["DE-ZZ"], "targeting.regions", "use the country 'DE'"),
    ("unknown_location", "targeting.location_categories", ["moon"], "targeting.location_categories", "use one of"),
    ("sensitive_location", "targeting.location_categories", ["hospital"], "targeting.location_categories",
     "sensitive location"),
    ("unknown_device", "targeting.devices", ["watch"], "targeting.devices", "use glasses or phone"),
    ("unknown_excluded", "excluded_categories", ["nope/none"], "excluded_categories", "campaigns categories"),
    ("targeted_and_excluded", "excluded_categories", ["sports/running_shoes"], "excluded_categories",
     "remove them from one list"),
    ("cap_day_not_positive", "frequency_cap.per_day", 0, "frequency_cap.per_day", "set at least 1"),
    ("cap_week_below_day", "frequency_cap", {"per_day": 5, "per_week": 2}, "frequency_cap.per_week",
     "raise per_week to at least 5"),
    ("skip_uncounted_without_cap", "frequency_cap", {"skip_uncounted": True}, "frequency_cap.skip_uncounted",
     "set per_day or per_week, or drop skip_uncounted"),
    ("daypart_hours", "schedule.dayparting", [{"weekdays": [0], "start_hour": 20, "end_hour": 8}],
     "schedule.dayparting[0]", "use 0 <= start_hour < end_hour <= 24"),
    ("daypart_weekdays", "schedule.dayparting", [{"weekdays": [7], "start_hour": 8, "end_hour": 20}],
     "schedule.dayparting[0].weekdays", "0 (Monday) .. 6 (Sunday)"),
    ("bad_id", "id", "bad id!", "id", "use 1-64 letters"),
    ("empty_name", "name", "", "name", "give the campaign a name"),
    ("missing_creative_active", "creatives", [], "creatives", "add a creative"),
    ("only_paused_creative_active", "creatives",
     [{"id": "x", "headline": "h", "landing_url": "https://a.example", "status": "paused"}], "creatives",
     "add a creative"),
    ("http_landing_url", "creatives", [{"id": "x", "headline": "h", "landing_url": "http://a.example/p"}],
     "creatives[0].landing_url", "use 'https://a.example/p'"),
    ("http_image_url", "creatives",
     [{"id": "x", "headline": "h", "landing_url": "https://a.example", "image_url": "ftp://img.example/a.png"}],
     "creatives[0].image_url", "use 'https://img.example/a.png'"),
    ("empty_landing_url", "creatives", [{"id": "x", "headline": "h", "landing_url": ""}],
     "creatives[0].landing_url", "set an https:// URL"),
    ("headline_too_long", "creatives", [{"id": "x", "headline": "h" * 91, "landing_url": "https://a.example"}],
     "creatives[0].headline", "shorten it to 90"),
    ("duplicate_creatives", "creatives", [{"id": "x", "headline": "h", "landing_url": "https://a.example"}] * 2,
     "creatives", "give each creative its own id"),
    ("active_after_end", "schedule", {"start": NOW - timedelta(days=10), "end": NOW - timedelta(days=1)},
     "status", "extend schedule.end"),
]


@pytest.mark.parametrize("path,value,field,fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_campaign_rule(campaign_doc, rules, path, value, field, fix):
    c = Campaign.from_doc(_set(campaign_doc(), path, value))
    problems = campaign_problems(c, rules, now=NOW)
    matching = [msg for f, msg in problems if f == field]
    assert matching, f"no problem on {field}; got {problems}"
    assert any(fix in msg for msg in matching), matching


def test_currency_must_match_advertiser(campaign_doc, rules):
    c = Campaign.from_doc(campaign_doc())
    problems = campaign_problems(c, rules, now=NOW, advertiser=Advertiser(id="acme", name="A", currency="USD"))
    assert ("budget.currency", "EUR differs from advertiser 'acme''s currency USD; set budget.currency: USD") in problems


def test_draft_without_creative_is_fine(campaign_doc, rules):
    c = Campaign.from_doc(campaign_doc(status="draft", creatives=[]))
    assert campaign_problems(c, rules, now=NOW) == []


def test_max_bid_comes_from_rules(campaign_doc):
    from campaigns import Rules, Taxonomy

    c = Campaign.from_doc(campaign_doc(bid={"strategy": "CPC", "amount": 2.0}))
    assert campaign_problems(c, Rules(Taxonomy(), max_bid=1.5), now=NOW)[0][0] == "bid.amount"
    assert campaign_problems(c, Rules(Taxonomy(), max_bid=3.0), now=NOW) == []


def test_all_problems_reported_at_once(campaign_doc, rules):
    from campaigns._validation import check_campaign

    doc = _set(_set(campaign_doc(), "budget.daily", -1.0), "bid.amount", 99.0)
    with pytest.raises(ValidationError) as exc:
        check_campaign(Campaign.from_doc(doc), rules, now=NOW)
    assert {"budget.daily", "bid.amount"} <= set(exc.value.fields)
    assert exc.value.code == "INVALID_ARGUMENT"
    assert exc.value.field == exc.value.fields[0]


@pytest.mark.parametrize("doc_change,field,fix", [
    ({"objective": "fame"}, "objective", "got 'fame'"),
    ({"colour": "red"}, "colour", "unknown field; remove it"),
    ({"bid": {"strategy": "CPC"}}, "bid.amount", "is required; add it"),
])
def test_shape_errors_name_the_fix(campaign_doc, doc_change, field, fix):
    with pytest.raises(ValidationError) as exc:
        Campaign.from_doc({**campaign_doc(), **doc_change})
    assert any(f == field and fix in m for f, m in exc.value.problems), exc.value.problems


def _product(**over) -> Product:
    doc = {"sku": "sku-1", "title": "Trail shoe", "brand": "Acme", "category": "sports/running_shoes",
           "price": 89.9, "currency": "EUR", "availability": "in_stock", "landing_url": "https://shop.example/p/1"}
    doc.update(over)
    return Product.from_doc(doc)


@pytest.mark.parametrize("over,field,fix", [
    ({"price": -1.0}, "price", "set the price"),
    ({"landing_url": "http://shop.example/p"}, "landing_url", "use 'https://shop.example/p'"),
    ({"category": "health/pharmacy"}, "category", "may never be targeted"),
    ({"category": "nope"}, "category", "campaigns categories"),
    ({"currency": "ABC"}, "currency", "use one of"),
    ({"quality": 1.5}, "quality", "rescale it"),
    ({"sku": "has space"}, "sku", "without spaces"),
    ({"title": ""}, "title", "set the product title"),
])
def test_product_rule(rules, over, field, fix):
    problems = product_problems(_product(**over), rules)
    assert any(f == field and fix in m for f, m in problems), problems


def test_valid_product_and_advertiser(rules):
    assert product_problems(_product(), rules) == []
    assert advertiser_problems(Advertiser(id="acme", name="ACME")) == []
    assert advertiser_problems(Advertiser(id="acme", name="", currency="XXX")) == [
        ("name", "is empty; set the advertiser's display name"),
        ("currency", advertiser_problems(Advertiser(id="a", name="a", currency="XXX"))[0][1]),
    ]


def test_archived_is_final(campaign_doc):
    c = Campaign.from_doc(campaign_doc(status="archived"))
    with pytest.raises(ValidationError, match="copy it into a new campaign"):
        check_transition(c, "active")
    check_transition(c, "archived")


def test_serving_helpers(campaign_doc):
    c = Campaign.from_doc(campaign_doc(schedule={
        "start": NOW - timedelta(days=1), "end": NOW + timedelta(days=1),
        "dayparting": [{"weekdays": [0, 1, 2, 3, 4], "start_hour": 8, "end_hour": 20}]}))
    assert c.in_flight(NOW)
    assert c.serves_at(NOW, 2, 9) and not c.serves_at(NOW, 2, 20) and not c.serves_at(NOW, 6, 9)
    assert not c.model_copy(update={"status": "paused"}).in_flight(NOW)
    assert c.daily_plan() == 100.0
    lifetime_only = Campaign.from_doc(campaign_doc(budget={"lifetime": 300.0}, schedule={
        "start": datetime(2026, 1, 1, tzinfo=timezone.utc), "end": datetime(2026, 1, 4, tzinfo=timezone.utc)}))
    assert lifetime_only.daily_plan() == pytest.approx(100.0)
