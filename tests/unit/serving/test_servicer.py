"""The Recommend servicer in-process with fakes: deadlines and the user-feature fallbacks."""

import time
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from campaigns import Advertiser, Campaign, CampaignSnapshot, Product, Taxonomy
from proto import events_pb2, serving_pb2
from serving import FALLBACK_VERSION, MemoryEventLog, RecommendationServicer, RegistryRankers
from serving.errors import DeadlineExceeded
from sightline.settings import load_settings

NOW = datetime.now(timezone.utc)


class _Snapshots:
    def __init__(self, frequency_cap: dict | None = None):
        camp = Campaign.from_doc({
            "id": "c1", "advertiser_id": "a1", "name": "c1", "status": "active",
            "schedule": {"start": (NOW - timedelta(days=1)).isoformat()}, "budget": {"daily": 100},
            "bid": {"strategy": "CPC", "amount": 1.0}, "targeting": {"categories": ["sports/running_shoes"]},
            "frequency_cap": frequency_cap or {},
            "creatives": [{"id": "cr1", "headline": "Run", "landing_url": "https://x.example", "product_sku": "p1"}]})
        product = Product(sku="p1", title="Trail running shoes", brand="B", category="sports/running_shoes",
                          price=80.0, landing_url="https://x.example/p1")
        self.snap = CampaignSnapshot(
            version=(1, 1), loaded_at=NOW, campaigns=MappingProxyType({"c1": camp}),
            advertisers=MappingProxyType({"a1": Advertiser(id="a1", name="A")}),
            products=MappingProxyType({"p1": product}),
            products_by_category=MappingProxyType({"sports/running_shoes": (product,)}))

    def get(self):
        return self.snap


class _Users:
    def __init__(self, fail=False):
        self.fail, self.calls = fail, 0

    def get(self, key):
        self.calls += 1
        if self.fail:
            raise ConnectionError("down")
        return {}


class _Ctx:
    def __init__(self, remaining):
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining


def _servicer(users):
    return RecommendationServicer(settings=load_settings(env={}), snapshots=_Snapshots(), rankers=RegistryRankers(None),
                                  events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=users, seed=1)


def _req():
    return serving_pb2.RecommendRequest(
        app_id="a", user_id="u", consent=events_pb2.Consent(context=True, personalization=True, measurement=True),
        context=events_pb2.Context(objects=["running_shoe"]), surfaces=serving_pb2.Surfaces(ad_slots=1, suggestions=1))


def test_expired_deadline_is_deadline_exceeded():
    with pytest.raises(DeadlineExceeded):
        _servicer(_Users()).Recommend(_req(), _Ctx(-0.001))


def test_short_deadline_skips_the_feature_store():
    users = _Users()
    servicer = _servicer(users)
    warm = _req()               # a server has run its code paths before (no consent: no feature read)
    warm.consent.personalization = False
    servicer.Recommend(warm, None)
    reply = servicer.Recommend(_req(), _Ctx(0.0049))   # under the 5 ms a feature read needs
    assert users.calls == 0 and servicer.stats()["user_features_fallback_deadline"] == 1
    assert reply.ads[0].campaign_id == "c1" and reply.model_version == FALLBACK_VERSION


def test_store_down_falls_back_and_counts():
    servicer = _servicer(_Users(fail=True))
    reply = servicer.Recommend(_req(), _Ctx(1.0))
    assert not reply.personalized and reply.ads and servicer.stats()["user_features_fallback_store_down"] == 1


class _RecordingRanker:
    version = "recording"

    def __init__(self):
        self.rows = []

    def score(self, rows):
        self.rows = [dict(r) for r in rows]
        return [0.5] * len(self.rows)


class _OneRanker:
    def __init__(self, ranker):
        self.ranker = ranker

    def get(self, ref):
        return self.ranker


def test_ranker_rows_carry_the_rating_training_sees():
    """Training reads ``rating`` (the product's quality); the rows serving scores must carry
    the same value for an ad's product and for a suggested product, or the model's rating
    weights see 0 at serving time (train/serve skew)."""
    snaps = _Snapshots()
    p = snaps.snap.products["p1"]
    rated = Product(sku=p.sku, title=p.title, brand=p.brand, category=p.category, price=p.price,
                    landing_url=p.landing_url, quality=0.83)
    snaps.snap = CampaignSnapshot(
        version=(1, 2), loaded_at=NOW, campaigns=snaps.snap.campaigns, advertisers=snaps.snap.advertisers,
        products=MappingProxyType({"p1": rated}), products_by_category=MappingProxyType({p.category: (rated,)}))
    ranker = _RecordingRanker()
    servicer = RecommendationServicer(settings=load_settings(env={}), snapshots=snaps, rankers=_OneRanker(ranker),
                                      events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=_Users(), seed=1)
    reply = servicer.Recommend(_req(), None)
    assert reply.ads and reply.suggestions and reply.model_version == "recording"
    by_kind = {r["item_kind"]: r for r in ranker.rows}
    assert by_kind["ad"]["rating"] == pytest.approx(0.83)
    assert by_kind["product"]["rating"] == pytest.approx(0.83)


def test_event_ids_are_the_uuid5_of_token_and_kind():
    import random
    import uuid

    from serving._recommend import _EVENT_NS, event_id_of

    rng = random.Random(3)
    for _ in range(500):
        token = "".join(rng.choice("abcXYZ019-_.é") for _ in range(rng.randint(0, 300)))
        kind = rng.randint(0, 5)
        assert event_id_of(token, kind) == str(uuid.uuid5(_EVENT_NS, f"{token}:{kind}"))


@pytest.mark.parametrize("measured", [True, False])
def test_each_served_item_logs_one_impression_with_its_own_fields(measured):
    from serving._recommend import event_id_of

    s = _servicer(_Users())
    request = _req()
    request.consent.measurement = measured
    request.context.scene = "park"
    request.surfaces.suggestions = 1
    began = time.perf_counter()
    reply = s.Recommend(request, None)
    took_ms = (time.perf_counter() - began) * 1000.0
    items = [(a.impression_token, a.creative_id, events_pb2.AD) for a in reply.ads] + \
            [(p.impression_token, p.product_sku, events_pb2.PRODUCT) for p in reply.suggestions]
    assert len(items) == 2
    logged = s._events.of(s._settings.topic("feedback"))
    assert [(e.impression_token, e.item_id, e.item_kind) for e in logged] == items
    for event in logged:
        assert event.type == events_pb2.IMPRESSION and event.event_id == event_id_of(event.impression_token, 1)
        assert event.consent == request.consent and event.app_id == "a" and event.model_version == reply.model_version
        assert (event.user_id, event.request_id) == (("u", reply.request_id) if measured else ("", ""))
        assert event.HasField("context") == measured and (event.context.scene == "park") == measured
    assert logged[0].campaign_id == "c1" and logged[0].category == "sports/running_shoes" and logged[1].position == 0
    # the reply's serve time, on each of its impressions (the experiments' latency guardrail)
    assert len({e.serve_ms for e in logged}) == 1 and 0 < logged[0].serve_ms <= took_ms


def test_a_new_snapshot_is_built_off_the_request_path(monkeypatch):
    """A campaign edit must not stall requests for the ~1 s a catalog takes to build: the
    requests keep the current catalog until the new one is ready, then use it."""
    import threading

    import serving._recommend as recommend

    snaps = _Snapshots()
    servicer = RecommendationServicer(settings=load_settings(env={}), snapshots=snaps, rankers=RegistryRankers(None),
                                      events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=_Users(), seed=1)
    first = servicer.catalog()
    assert servicer.Recommend(_req(), None).ads[0].campaign_id == "c1"
    release = threading.Event()
    real = recommend.build_catalog

    def slow_build(*args, **kwargs):
        release.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(recommend, "build_catalog", slow_build)
    snaps.snap = CampaignSnapshot(      # the marketer paused c1: no campaign left
        version=(1, 2), loaded_at=NOW, campaigns=MappingProxyType({}), advertisers=snaps.snap.advertisers,
        products=snaps.snap.products, products_by_category=snaps.snap.products_by_category)
    assert servicer.catalog() is first, "the request keeps the current catalog while the new one builds"
    assert servicer.Recommend(_req(), None).ads, "served from the previous snapshot meanwhile"
    release.set()
    rebuilt = servicer.wait_for_catalog(timeout=5)
    assert rebuilt is not first and rebuilt.version == (1, 2)
    assert rebuilt.product_side is first.product_side, "a campaign edit reuses what the products gave"
    assert not servicer.Recommend(_req(), None).ads
    assert servicer.stats()["catalog_builds"] == 2


def test_a_snapshot_that_fails_to_build_keeps_the_previous_catalog_and_is_not_retried(monkeypatch):
    import serving._recommend as recommend

    snaps = _Snapshots()
    servicer = RecommendationServicer(settings=load_settings(env={}), snapshots=snaps, rankers=RegistryRankers(None),
                                      events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=_Users(), seed=1)
    first = servicer.catalog()
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise ValueError("bad snapshot")

    monkeypatch.setattr(recommend, "build_catalog", broken)
    snaps.snap = CampaignSnapshot(version=(1, 2), loaded_at=NOW, campaigns=snaps.snap.campaigns,
                                  advertisers=snaps.snap.advertisers, products=snaps.snap.products,
                                  products_by_category=snaps.snap.products_by_category)
    for _ in range(20):
        assert servicer.Recommend(_req(), None).ads, "the previous catalog keeps serving"
        rebuild = servicer._catalog_rebuild
        if rebuild is not None:
            rebuild.join(5)
    assert servicer.catalog() is first
    assert len(calls) == 1 and servicer.stats()["catalog_build_failures"] == 1


class _DictItems:
    """Item statistics without columns: the servicer reads them per candidate."""

    def __init__(self, items, campaigns):
        self._items, self._campaigns = items, campaigns

    def item(self, item_id):
        return self._items.get(item_id, {})

    def campaign(self, campaign_id):
        return self._campaigns.get(campaign_id, {})


def test_statistics_read_as_columns_score_as_the_dict_rows():
    from serving._item_stats import ItemFeatures

    settings = load_settings(env={})
    items = {"cr1": {"item_impressions_24h": 400, "item_clicks_24h": 60}, "p1": {"item_impressions_24h": 900}}
    campaigns = {"c1": {"campaign_impressions_24h": 500}}
    features = ItemFeatures(settings, lambda: ([], []))          # not started: rows set by hand
    features._rows = {"item": dict(items), "campaign": dict(campaigns)}
    replies = []
    for source in (features, _DictItems(items, campaigns)):
        servicer = RecommendationServicer(settings=settings, snapshots=_Snapshots(), rankers=RegistryRankers(None),
                                          events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=_Users(),
                                          item_features=source, seed=1)
        replies.append(servicer.Recommend(_req(), None))
        assert (servicer.catalog().stats is not None) == (source is features)
    fast, slow = replies
    assert fast.ads and fast.ads[0].pctr == pytest.approx(slow.ads[0].pctr, rel=1e-12)
    assert fast.suggestions[0].score == pytest.approx(slow.suggestions[0].score, rel=1e-12)
    no_stats = RecommendationServicer(settings=settings, snapshots=_Snapshots(), rankers=RegistryRankers(None),
                                      events=MemoryEventLog(), taxonomy=Taxonomy(), user_features=_Users(), seed=1)
    assert no_stats.Recommend(_req(), None).ads[0].pctr < fast.ads[0].pctr, "a 15 % CTR raises the pCTR"


@pytest.mark.parametrize("skip", [False, True])
def test_a_capped_campaign_may_skip_the_users_its_cap_cannot_count(skip, tmp_path):
    """Without personalization consent no impression is counted: a campaign capped at 3 a day
    serves such users uncapped by default, or not at all with ``skip_uncounted``."""
    settings = load_settings(env={}, data_dir=tmp_path)
    s = RecommendationServicer(settings=settings, snapshots=_Snapshots({"per_day": 3, "skip_uncounted": skip}),
                               rankers=RegistryRankers(None), events=MemoryEventLog(), taxonomy=Taxonomy(),
                               user_features=_Users(), seed=1)
    assert [a.campaign_id for a in s.Recommend(_req(), None).ads] == ["c1"], "a counted user: capped as usual"
    anonymous = _req()
    anonymous.consent.personalization = False
    assert [a.campaign_id for a in s.Recommend(anonymous, None).ads] == ([] if skip else ["c1"])
    assert s.stats().get("ads_capped_uncounted", 0) == (1 if skip else 0)
