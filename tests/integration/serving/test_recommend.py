"""Recommend and ReportFeedback against the real server on 127.0.0.1 (real campaign DB,
real Feast repo, real experiments store): ranking, targeting, caps, pacing, diversity,
consent fallback, auth, validation of every field, feature-store degradation, reflection."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from proto import events_pb2, serving_pb2
from serving import ERROR_FIELD_METADATA, FALLBACK_VERSION, Defaults, pseudonymize

pytestmark = pytest.mark.integration


def req(user="u1", personal=True, measurement=True, ads=3, sugg=5, request_id="", **ctx):
    context = {"device": events_pb2.GLASSES, "local_hour": 12, "local_weekday": 2, **ctx}
    return serving_pb2.RecommendRequest(
        app_id="glasses-app", user_id=user, request_id=request_id,
        consent=events_pb2.Consent(context=True, personalization=personal, measurement=measurement),
        context=events_pb2.Context(**context), surfaces=serving_pb2.Surfaces(ad_slots=ads, suggestions=sugg))


SHOES = dict(scene="park", objects=["running_shoe"], intent_text="I need running shoes under 100 euros",
             location_category="outdoors", region="DE-BE")


@pytest.fixture(scope="module")
def running(serving_settings, serving_kit):
    r = serving_kit.start_server(serving_settings, defaults=Defaults(reserve_ecpm=10.0))
    yield r
    serving_kit.stop_server(r)


def test_ranked_ads_and_suggestions_with_tokens(running):
    reply = running.recommend(req(user="rank-1", **SHOES))
    assert reply.request_id and reply.model_version == FALLBACK_VERSION
    assert reply.ads, "a running-shoes context must get ads"
    assert [a.position for a in reply.ads] == list(range(len(reply.ads)))
    assert [a.score for a in reply.ads] == sorted((a.score for a in reply.ads), reverse=True)
    for ad in reply.ads:
        assert ad.impression_token and ad.explanation and 0 < ad.pctr < 1 and ad.price_charged <= 2.0
    assert reply.suggestions and all(s.category == "sports/running_shoes" for s in reply.suggestions[:3])
    assert reply.suggestions[0].price <= 100, "the intent's price cap is preferred"
    assert "running" in reply.suggestions[0].explanation or "looking at" in reply.suggestions[0].explanation
    impressions = [m for m in running.events.of(running.settings.topic("feedback"))
                   if m.request_id == reply.request_id]
    assert len(impressions) == len(reply.ads) + len(reply.suggestions)
    assert all(m.type == events_pb2.IMPRESSION and m.context.scene == "park" for m in impressions)


def test_targeting_scene_device_daypart_exclusion(running):
    cafe = running.recommend(req(user="t-1", scene="cafe", objects=["cup"], ads=5))
    assert "c-coffee" in {a.campaign_id for a in cafe.ads}
    gym = running.recommend(req(user="t-2", scene="gym", ads=5))
    assert "c-coffee" not in {a.campaign_id for a in gym.ads}
    headphones = dict(intent_text="noise cancelling headphones please")
    assert "c-glasses" in {a.campaign_id for a in running.recommend(req(user="t-3", ads=5, **headphones)).ads}
    phone = req(user="t-4", ads=5, **headphones)
    phone.context.device = events_pb2.PHONE
    assert "c-glasses" not in {a.campaign_id for a in running.recommend(phone).ads}
    day = {a.campaign_id for a in running.recommend(req(user="t-5", ads=10, **SHOES)).ads}
    night = {a.campaign_id for a in running.recommend(req(user="t-6", ads=10, **{**SHOES, "local_hour": 23})).ads}
    assert "c-night" not in day and "c-night" in night
    clean = {a.campaign_id for a in running.recommend(req(user="t-7", ads=10, scene="park", objects=["running_shoe"])).ads}
    near_pharmacy = running.recommend(req(user="t-8", ads=10, sugg=10, scene="park", objects=["running_shoe", "pharmacy"]))
    assert "c-safe" in clean and "c-safe" not in {a.campaign_id for a in near_pharmacy.ads}
    assert all(not s.category.startswith("health/") for s in near_pharmacy.suggestions)


def test_one_ad_per_advertiser(running):
    for i in range(5):
        reply = running.recommend(req(user=f"div-{i}", ads=10, **SHOES))
        advertisers = [a.advertiser_id for a in reply.ads]
        assert len(advertisers) == len(set(advertisers))
        brands = [s.brand for s in reply.suggestions]
        assert all(brands.count(b) <= 2 for b in brands)


def test_frequency_cap_per_user_and_campaign(running):
    first = running.recommend(req(user="cap-1", ads=10, **SHOES))
    assert "c-shoes" in {a.campaign_id for a in first.ads}
    again = running.recommend(req(user="cap-1", ads=10, **SHOES))
    assert "c-shoes" not in {a.campaign_id for a in again.ads}, "per_day=1 reached"
    other = running.recommend(req(user="cap-2", ads=10, **SHOES))
    assert "c-shoes" in {a.campaign_id for a in other.ads}
    # without personalization consent nothing user-keyed is counted
    anon = [running.recommend(req(user="cap-3", personal=False, ads=10, **SHOES)) for _ in range(2)]
    assert all("c-shoes" in {a.campaign_id for a in r.ads} for r in anon)


def test_pacing_keeps_a_tiny_budget(running):
    spent = 0.0
    served = 0
    for i in range(40):
        reply = running.recommend(req(user=f"pace-{i}", ads=1, sugg=0, scene="gym"))
        for ad in reply.ads:
            if ad.campaign_id == "c-tiny":
                served += 1
                spent += ad.price_charged
    assert served > 0
    assert spent <= 0.2 * 1.02 + 1e-9, f"spent {spent} of a 0.2 daily budget"
    state = running.servicer.pacing.status("c-tiny", __import__("time").time())
    assert state.committed <= 0.2 * 1.02


def test_experiment_arms_apply_and_exposures_are_logged(tmp_path, serving_kit):
    from experiments import Arm, ArmParams, Experiment, ExperimentStore
    from sightline.settings import load_settings

    settings = load_settings(env={}, data_dir=tmp_path / "data", serving={"port": 0})
    serving_kit.seed_world(settings.campaign_db_url)
    store = ExperimentStore.from_settings(settings)
    store.create(Experiment(id="ads-count", layer="ads", unit_type="request",
                            arms=(Arm(name="control", weight=1), Arm(name="one-ad", weight=1, params=ArmParams(num_ads=1)))))
    store.start("ads-count")
    store.close()
    running = serving_kit.start_server(settings, feature_store=False)
    try:
        arms = set()
        for i in range(12):
            reply = running.recommend(req(user=f"exp-{i}", ads=3, **SHOES))
            (assignment,) = reply.assignments
            arms.add(assignment.arm)
            assert len(reply.ads) <= 1 if assignment.arm == "one-ad" else len(reply.ads) > 1
        assert arms == {"control", "one-ad"}
        exposures = running.events.of(settings.topic("exposures"))
        assert len([e for e in exposures if e.experiment_id == "ads-count"]) == 12, "one per request unit"
    finally:
        serving_kit.stop_server(running)


def test_consent_fallback_and_personalization_from_feast(running, serving_settings):
    import pandas as pd
    from datetime import datetime, timezone
    from features import open_store

    store = open_store(serving_settings)
    user_key = pseudonymize("u-feast", serving_settings.privacy.hmac_key)
    ts = pd.Timestamp(datetime.now(timezone.utc))
    store.write_to_online_store("user_engagement", pd.DataFrame([{
        "user_id": user_key, "event_timestamp": ts, "impressions_1h": 1, "clicks_1h": 0, "impressions_24h": 5,
        "clicks_24h": 2, "impressions_7d": 20, "clicks_7d": 5, "engaged_categories_7d": ["grocery/coffee"],
        "engaged_category_impressions_1h": [1], "engaged_category_clicks_1h": [0],
        "engaged_category_impressions_24h": [5], "engaged_category_clicks_24h": [2],
        "engaged_category_impressions_7d": [20], "engaged_category_clicks_7d": [5]}]))
    before = running.servicer.stats()
    personal = running.recommend(req(user="u-feast", scene="street", ads=0, sugg=5))
    assert personal.personalized
    assert any(s.category == "grocery/coffee" for s in personal.suggestions), "engaged category is suggested"
    anon = running.recommend(req(user="u-feast", personal=False, scene="street", ads=0, sugg=5))
    assert not anon.personalized and not anon.suggestions, "no context signal and no profile: nothing to suggest"
    unknown = running.recommend(req(user="nobody", scene="street", ads=0, sugg=5))
    assert not unknown.personalized
    after = running.servicer.stats()
    assert after.get("user_features_fallback_no_consent", 0) > before.get("user_features_fallback_no_consent", 0)
    assert after.get("user_features_fallback_absent", 0) > before.get("user_features_fallback_absent", 0)


def test_feedback_click_builds_the_event_and_charges(running):
    reply = running.recommend(req(user="fb-1", **SHOES))
    ad = reply.ads[0]
    answer = running.feedback(serving_pb2.FeedbackRequest(type=events_pb2.CLICK, impression_token=ad.impression_token))
    again = running.feedback(serving_pb2.FeedbackRequest(type=events_pb2.CLICK, impression_token=ad.impression_token))
    assert answer.event_id == again.event_id, "event ids are deterministic: replays dedupe"
    clicks = [m for m in running.events.of(running.settings.topic("feedback")) if m.event_id == answer.event_id]
    click = clicks[0]
    assert click.type == events_pb2.CLICK and click.campaign_id == ad.campaign_id and click.item_id == ad.creative_id
    assert click.user_id == "fb-1" and click.request_id == reply.request_id and click.position == 0
    assert click.spend == pytest.approx(ad.price_charged, rel=1e-5) and click.pctr == pytest.approx(ad.pctr, rel=1e-4)
    assert click.serve_ms == 0, "a serve time belongs to the impression Recommend logged, not to a reported click"
    conv = running.feedback(serving_pb2.FeedbackRequest(type=events_pb2.CONVERSION, conversion_value=42.0,
                                                        impression_token=reply.suggestions[0].impression_token))
    assert conv.event_id


@pytest.mark.parametrize("mutate,field", [
    (lambda r: setattr(r, "app_id", ""), "app_id"),
    (lambda r: setattr(r, "user_id", ""), "user_id"),
    (lambda r: setattr(r, "user_id", "x" * 200), "user_id"),
    (lambda r: setattr(r, "request_id", "has space"), "request_id"),
    (lambda r: setattr(r.context, "device", 7), "context.device"),
    (lambda r: setattr(r.context, "scene", "Not A Label!"), "context.scene"),
    (lambda r: setattr(r.context, "location_category", "x" * 100), "context.location_category"),
    (lambda r: r.context.objects.extend(["o"] * 40), "context.objects"),
    (lambda r: r.context.objects.append("bad label"), "context.objects[1]"),
    (lambda r: setattr(r.context, "intent_text", "x" * 1001), "context.intent_text"),
    (lambda r: setattr(r.context, "region", "Berlin"), "context.region"),
    (lambda r: setattr(r.context, "local_hour", 24), "context.local_hour"),
    (lambda r: setattr(r.context, "local_weekday", -1), "context.local_weekday"),
    (lambda r: setattr(r.surfaces, "ad_slots", 11), "surfaces.ad_slots"),
    (lambda r: setattr(r.surfaces, "ad_slots", -1), "surfaces.ad_slots"),
    (lambda r: setattr(r.surfaces, "suggestions", 51), "surfaces.suggestions"),
    (lambda r: (setattr(r.surfaces, "ad_slots", 0), setattr(r.surfaces, "suggestions", 0)), "surfaces"),
])
def test_each_invalid_field_is_named(running, mutate, field):
    request = req(objects=["running_shoe"])
    mutate(request)
    with pytest.raises(grpc.RpcError) as info:
        running.recommend(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert dict(info.value.trailing_metadata())[ERROR_FIELD_METADATA] == field
    assert field.split("[")[0].split(".")[-1] in info.value.details()


def test_no_context_consent_is_refused_and_bad_feedback_is_named(running):
    request = req()
    request.consent.context = False
    with pytest.raises(grpc.RpcError) as info:
        running.recommend(request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "consent.context" in info.value.details()
    for bad, field in [(serving_pb2.FeedbackRequest(type=events_pb2.CLICK, impression_token="forged.token"), "impression_token"),
                       (serving_pb2.FeedbackRequest(type=events_pb2.CLICK), "impression_token"),
                       (serving_pb2.FeedbackRequest(type=9, impression_token="x"), "type"),
                       (serving_pb2.FeedbackRequest(type=events_pb2.CLICK, impression_token="x", conversion_value=3), "conversion_value")]:
        with pytest.raises(grpc.RpcError) as info:
            running.feedback(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(info.value.trailing_metadata())[ERROR_FIELD_METADATA] == field


def test_auth_failure(running):
    with pytest.raises(grpc.RpcError) as info:
        running.stub.Recommend(req(**SHOES), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        running.stub.Recommend(req(**SHOES), timeout=5, metadata=[("x-api-key", running.key[:-3] + "abc")])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_lists_the_services(running):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"sightline.v1.RecommendationService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_feature_store_down_degrades_to_context_only(tmp_path, serving_kit):
    from features import apply_repo
    from sightline.settings import load_settings

    settings = load_settings(env={}, data_dir=tmp_path / "data", serving={"port": 0})
    serving_kit.seed_world(settings.campaign_db_url)
    apply_repo(settings)
    r = serving_kit.start_server(settings, use_experiments=False)
    try:
        assert r.recommend(req(user="down-1", **SHOES)).ads
        with sqlite3.connect(settings.feast_dir / "online.db") as conn:   # the online store loses its tables
            for (name,) in conn.execute("select name from sqlite_master where type='table'").fetchall():
                conn.execute(f'drop table "{name}"')
        reply = r.recommend(req(user="down-2", **SHOES))
        assert reply.ads and reply.suggestions and not reply.personalized
        assert r.servicer.stats().get("user_features_fallback_store_down", 0) >= 1
    finally:
        serving_kit.stop_server(r)


def test_a_restarted_server_does_not_grant_a_spent_budget_again(tmp_path, serving_kit):
    """A deploy mid-day restarts the server: today's spend must come back (the spend ledger in
    the campaign store), or a campaign that used its budget serves its whole budget again."""
    import time

    from campaigns import CampaignStore
    from serving._pacing import DAY_S
    from sightline.settings import load_settings

    seed_world, start_server, stop_server = serving_kit.seed_world, serving_kit.start_server, serving_kit.stop_server
    settings = load_settings(env={}, data_dir=tmp_path / "data", serving={"port": 0, "pacing_flush_s": 0.2})
    seed_world(settings.campaign_db_url)

    def tiny_spend(running, users: str) -> float:
        spent = 0.0
        for i in range(40):
            for ad in running.recommend(req(user=f"{users}-{i}", ads=1, sugg=0, scene="gym")).ads:
                if ad.campaign_id == "c-tiny":
                    spent += ad.price_charged
        return spent

    # a reserve, so the campaign alone in its auction pays something (as in the module's server)
    kw = dict(feature_store=False, use_experiments=False, defaults=Defaults(reserve_ecpm=10.0))
    first = start_server(settings, **kw)
    try:
        before = tiny_spend(first, "a")
        booked = first.servicer.pacing.status("c-tiny", time.time()).spent
    finally:
        stop_server(first)                       # stopping flushes what is left
    assert before > 0.1 and booked == pytest.approx(before)
    store = CampaignStore.open(settings.campaign_db_url)
    try:
        assert store.spend_on(int(time.time() // DAY_S))["c-tiny"] == pytest.approx(before)
    finally:
        store.close()

    second = start_server(settings, **kw)
    try:
        resumed = second.servicer.pacing.status("c-tiny", time.time())
        assert resumed is not None, "the restarted server starts the day from nothing spent"
        assert resumed.spent == pytest.approx(before)
        after = tiny_spend(second, "b")
        assert second.servicer.stats()["spend_ledger"]["failures"] == 0
    finally:
        stop_server(second)
    assert before + after <= 0.2 * 1.02 + 1e-9, f"spent {before} then {after} of a 0.2 daily budget"
