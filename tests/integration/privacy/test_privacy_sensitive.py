"""Sensitive categories (health, religion, politics, sexuality, minors) are never targeting:
campaign validation through the real campaign store. (That they never become features is
checked on streaming's pipeline in test_privacy_consent_e2e.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from campaigns import SENSITIVE_TOPS, Advertiser, Campaign, CampaignStore, Product, Taxonomy, ValidationError

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
TAXONOMY = Taxonomy()
SENSITIVE_LEAVES = [c.id for c in TAXONOMY.leaves(include_sensitive=True) if c.sensitive]


def _doc(cid, targeting, excluded=()):
    return {
        "id": cid, "advertiser_id": "adv", "name": cid, "status": "draft",
        "schedule": {"start": (NOW + timedelta(days=1)).isoformat(), "end": (NOW + timedelta(days=30)).isoformat()},
        "budget": {"daily": 100.0, "currency": "EUR"}, "bid": {"strategy": "CPC", "amount": 1.0},
        "targeting": targeting, "excluded_categories": list(excluded),
        "creatives": [{"id": f"{cid}-cr", "headline": "Hello", "landing_url": "https://example.com/x"}],
    }


@pytest.fixture
def store(make_settings):
    s = make_settings()
    st = CampaignStore.open(s.campaign_db_url)
    st.create_advertiser(Advertiser(id="adv", name="Adv", currency="EUR"), actor="test")
    yield st
    st.close()


def _refused(store, doc, field_part: str):
    with pytest.raises(ValidationError) as info:
        store.create_campaign(Campaign.from_doc(doc), actor="test")
    assert any(field_part in f for f in info.value.fields), info.value.problems
    assert "sensitive" in str(info.value)


def test_every_sensitive_top_is_covered_by_the_taxonomy():
    assert SENSITIVE_TOPS == {"health", "religion", "politics", "sexuality", "minors"}
    assert {c.split("/")[0] for c in SENSITIVE_LEAVES} == SENSITIVE_TOPS


@pytest.mark.parametrize("category", SENSITIVE_LEAVES + sorted(SENSITIVE_TOPS))
def test_sensitive_categories_cannot_be_targeted(store, category):
    _refused(store, _doc("c-" + category.replace("/", "-"), {"categories": [category]}), "targeting.categories")


@pytest.mark.parametrize("word", ["health", "religion", "pharmacy", "mental_health", "dating", "places_of_worship"])
def test_sensitive_words_cannot_be_keywords_scenes_or_objects(store, word):
    for field in ("keywords", "scenes", "objects"):
        _refused(store, _doc(f"c-{field}-{word}", {field: [word]}), "targeting")


@pytest.mark.parametrize("word", ["church", "bible", "pregnancy", "election"])
def test_everyday_words_for_sensitive_categories_cannot_be_targeted(store, word):
    """Streaming recognises these as sensitive (its synonym lexicon); targeting them must be refused too."""
    from streaming import LexiconMatcher

    assert LexiconMatcher().match(word).sensitive, f"precondition: streaming treats {word!r} as sensitive"
    _refused(store, _doc(f"c-syn-{word}", {"keywords": [word]}), "targeting")


@pytest.mark.parametrize("location", ["hospital", "place_of_worship", "school"])
def test_sensitive_locations_cannot_be_targeted(store, location):
    _refused(store, _doc(f"c-loc-{location}", {"location_categories": [location]}), "targeting.location_categories")


def test_sensitive_categories_may_be_excluded(store):
    c = store.create_campaign(Campaign.from_doc(_doc("c-safe", {"categories": ["sports/running_shoes"]},
                                                     excluded=sorted(SENSITIVE_TOPS))), actor="test")
    assert set(c.excluded_categories) == SENSITIVE_TOPS


def test_products_in_sensitive_categories_are_refused(store):
    with pytest.raises(ValidationError, match="sensitive"):
        store.bulk_load(products=[Product(sku="p-1", title="Pills", brand="X", category="health/pharmacy", price=5.0,
                                          landing_url="https://example.com/p")], actor="test")


def test_streaming_recognises_every_sensitive_leaf_name():
    from streaming import LexiconMatcher

    m = LexiconMatcher()
    for cat in SENSITIVE_LEAVES:
        hit = m.match(TAXONOMY.get(cat).label)
        assert cat in hit.sensitive and not hit.categories, (cat, hit)
