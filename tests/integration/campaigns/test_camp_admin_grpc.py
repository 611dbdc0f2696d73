"""CampaignAdminService through a real gRPC server on 127.0.0.1 built by
``serving.build_server``: API-key auth scopes, marketer scoping, CRUD, listing,
validation errors as INVALID_ARGUMENT, delivery stats from the event log, audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import grpc
import pytest

pytestmark = pytest.mark.integration

START_MS = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000)


@pytest.fixture
def admin(make_settings):
    """(stub, keys, store, settings) with a running server and three keys: admin, app, acme-marketer."""
    import serving
    from campaigns import CampaignStore, admin_service
    from proto import admin_pb2_grpc

    settings = make_settings()
    store = CampaignStore.from_settings(settings)
    keys = serving.ApiKeyStore.from_settings(settings)
    plain = {
        "admin": keys.create_key("platform-admin", ["admin:campaigns"]),
        "app": keys.create_key("glasses-app", ["recommend", "feedback"]),
        "acme": keys.create_key("advertiser:acme:bob", ["admin:campaigns"]),
        "zeta": keys.create_key("advertiser:zeta", ["admin:campaigns"]),
    }
    server = serving.build_server(settings, [admin_service(store, data_dir=settings.data_dir)], api_keys=keys,
                                  host="127.0.0.1", port=0).start()
    channel = grpc.insecure_channel(server.address)
    stub = admin_pb2_grpc.CampaignAdminServiceStub(channel)
    yield stub, plain, store, settings
    channel.close()
    server.stop(grace=0)
    store.close()
    keys.close()


def md(key: str | None):
    return (("x-api-key", key),) if key else None


def _spec(pb, cid="c1", advertiser="acme", **over):
    spec = pb.CampaignSpec(
        id=cid, advertiser_id=advertiser, name=f"Campaign {cid}", objective="traffic", status="active",
        schedule=pb.CampaignSchedule(start_time_ms=START_MS, dayparting=[pb.DaypartWindow(weekdays=[0, 1, 2, 3, 4],
                                                                                         start_hour=7, end_hour=22)]),
        budget=pb.CampaignBudget(daily=100, lifetime=2000, currency="EUR"),
        bid=pb.BidStrategy(strategy="CPC", amount=0.8),
        targeting=pb.CampaignTargeting(categories=["sports/running_shoes"], regions=["DE"], devices=["glasses"]),
        frequency_cap=pb.FrequencyCap(per_day=3),
        creatives=[pb.CreativeSpec(id=f"{cid}-cr1", headline="Run faster", landing_url="https://shop.example/run")],
    )
    for k, v in over.items():
        if hasattr(v, "CopyFrom"):
            getattr(spec, k).CopyFrom(v)
        else:
            setattr(spec, k, v)
    return spec


def _code(call) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    err = exc.value
    return err.code(), err.details(), dict(err.trailing_metadata() or ())


def test_auth_scopes(admin):
    from proto import admin_pb2 as pb

    stub, keys, _, _ = admin
    code, details, _ = _code(lambda: stub.ListCampaigns(pb.ListCampaignsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "x-api-key" in details
    code, details, _ = _code(lambda: stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=md(keys["app"])))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "admin:campaigns" in details
    code, _, _ = _code(lambda: stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=md("slk_nope_nope")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=md(keys["admin"])).campaigns == []


def test_crud_listing_and_errors(admin):
    from proto import admin_pb2 as pb

    stub, keys, store, _ = admin
    k = md(keys["admin"])
    stub.CreateAdvertiser(pb.Advertiser(id="acme", name="ACME", currency="EUR"), metadata=k)
    created = stub.CreateCampaign(_spec(pb), metadata=k)
    assert created.version == 1 and created.creatives[0].id == "c1-cr1"
    assert list(created.schedule.dayparting[0].weekdays) == [0, 1, 2, 3, 4]
    got = stub.GetCampaign(pb.GetCampaignRequest(id="c1"), metadata=k)
    assert got.bid.amount == pytest.approx(0.8) and list(got.targeting.regions) == ["DE"]

    code, details, trailing = _code(lambda: stub.CreateCampaign(
        _spec(pb, "c2", bid=pb.BidStrategy(strategy="CPC", amount=80)), metadata=k))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "lower it to at most 50.0" in details
    assert trailing.get("x-error-field") == "bid.amount"
    code, _, _ = _code(lambda: stub.CreateCampaign(_spec(pb), metadata=k))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, details, _ = _code(lambda: stub.GetCampaign(pb.GetCampaignRequest(id="ghost"), metadata=k))
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details

    spec = pb.CampaignSpec()
    spec.CopyFrom(got)
    spec.budget.daily = 80
    updated = stub.UpdateCampaign(pb.UpdateCampaignRequest(campaign=spec, expected_version=got.version), metadata=k)
    assert updated.budget.daily == 80 and updated.version == 2
    code, details, _ = _code(lambda: stub.UpdateCampaign(
        pb.UpdateCampaignRequest(campaign=spec, expected_version=got.version), metadata=k))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "reload it" in details

    paused = stub.SetCampaignStatus(pb.SetCampaignStatusRequest(id="c1", status="paused"), metadata=k)
    assert paused.status == "paused" and store.get_campaign("c1").status == "paused"
    with_cr = stub.AddCreative(pb.AddCreativeRequest(campaign_id="c1", creative=pb.CreativeSpec(
        id="c1-cr2", headline="Second", landing_url="https://shop.example/2")), metadata=k)
    assert [c.id for c in with_cr.creatives] == ["c1-cr1", "c1-cr2"]
    assert len(stub.RemoveCreative(pb.RemoveCreativeRequest(campaign_id="c1", creative_id="c1-cr2"),
                                   metadata=k).creatives) == 1

    for i in range(2, 7):
        stub.CreateCampaign(_spec(pb, f"c{i}", objective="conversions" if i % 2 else "traffic"), metadata=k)
    page1 = stub.ListCampaigns(pb.ListCampaignsRequest(page_size=4), metadata=k)
    page2 = stub.ListCampaigns(pb.ListCampaignsRequest(page_size=4, page_token=page1.next_page_token), metadata=k)
    assert [c.id for c in page1.campaigns] + [c.id for c in page2.campaigns] == [f"c{i}" for i in range(1, 7)]
    assert page2.next_page_token == ""
    assert [c.id for c in stub.ListCampaigns(pb.ListCampaignsRequest(statuses=["paused"]), metadata=k).campaigns] == ["c1"]
    assert [c.id for c in stub.ListCampaigns(pb.ListCampaignsRequest(objective="conversions"),
                                             metadata=k).campaigns] == ["c3", "c5"]

    res = stub.UpsertProducts(pb.UpsertProductsRequest(products=[pb.ProductSpec(
        sku="p1", title="Shoe", brand="Acme", category="sports/running_shoes", price=90, currency="EUR",
        availability="in_stock", landing_url="https://shop.example/p1")]), metadata=k)
    assert (res.created, res.updated) == (1, 0)
    assert stub.GetProduct(pb.GetProductRequest(sku="p1"), metadata=k).price == 90

    entries = stub.ListAuditLog(pb.ListCampaignAuditLogRequest(entity_type="campaign", entity_id="c1"), metadata=k).entries
    assert [e.action for e in entries][-2:] == ["update", "create"] and entries[0].actor == "platform-admin"
    assert json.loads(entries[-2].before_json)["budget"]["daily"] == 100.0


def test_marketer_scoping(admin):
    from proto import admin_pb2 as pb

    stub, keys, _, _ = admin
    k = md(keys["admin"])
    for adv in ("acme", "zeta"):
        stub.CreateAdvertiser(pb.Advertiser(id=adv, name=adv.upper(), currency="EUR"), metadata=k)
    stub.CreateCampaign(_spec(pb, "z1", advertiser="zeta"), metadata=k)
    acme = md(keys["acme"])
    stub.CreateCampaign(_spec(pb, "a1"), metadata=acme)
    assert [c.id for c in stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=acme).campaigns] == ["a1"]
    assert [a.id for a in stub.ListAdvertisers(pb.ListAdvertisersRequest(), metadata=acme).advertisers] == ["acme"]
    for call in (
        lambda: stub.GetCampaign(pb.GetCampaignRequest(id="z1"), metadata=acme),
        lambda: stub.SetCampaignStatus(pb.SetCampaignStatusRequest(id="z1", status="paused"), metadata=acme),
        lambda: stub.CreateCampaign(_spec(pb, "a2", advertiser="zeta"), metadata=acme),
        lambda: stub.CreateAdvertiser(pb.Advertiser(id="new", name="New"), metadata=acme),
        lambda: stub.ListAuditLog(pb.ListCampaignAuditLogRequest(), metadata=acme),
    ):
        code, details, _ = _code(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
    entries = stub.ListAuditLog(pb.ListCampaignAuditLogRequest(entity_type="campaign", entity_id="a1"),
                                metadata=acme).entries
    assert entries[0].actor == "advertiser:acme:bob"


def test_delivery_stats(admin):
    import pyarrow as pa

    from features import append_events, event_log_schema
    from proto import admin_pb2 as pb

    stub, keys, _, settings = admin
    k = md(keys["admin"])
    stub.CreateAdvertiser(pb.Advertiser(id="acme", name="ACME", currency="EUR"), metadata=k)
    stub.CreateCampaign(_spec(pb, "c1"), metadata=k)
    day = datetime.now(timezone.utc).replace(hour=0, minute=30, second=0, microsecond=0) - timedelta(hours=24)
    schema = event_log_schema("feedback")
    rows = []
    for i, (kind, spend) in enumerate([("impression", 0.0)] * 10 + [("click", 0.8)] * 2 + [("conversion", 0.0)]):
        row = {name: None for name in schema.names}
        row.update(event_id=f"e{i}", event_time=day + timedelta(minutes=i), type=kind, campaign_id="c1",
                   spend=spend, consent_measurement=True)
        rows.append(row)
    append_events(settings.data_dir, "feedback", pa.Table.from_pylist(rows, schema=schema))
    res = stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(campaign_id="c1"), metadata=k)
    assert len(res.rows) == 1
    r = res.rows[0]
    assert (r.day, r.impressions, r.clicks, r.conversions) == (day.date().isoformat(), 10, 2, 1)
    assert r.spend == pytest.approx(1.6) and r.ctr == pytest.approx(0.2) and r.cvr == pytest.approx(0.5)
    assert r.cpc == pytest.approx(0.8) and r.cpa == pytest.approx(1.6)
    assert r.planned_spend == 100 and r.budget_used == pytest.approx(0.016) and r.pacing_status == "underpacing"
    empty = stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(campaign_id="c1", since="2020-01-01",
                                                             until="2020-01-02"), metadata=k)
    assert empty.rows == []
    code, details, _ = _code(lambda: stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(since="yesterday"), metadata=k))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "YYYY-MM-DD" in details


def test_registered_by_serving_admin_services(make_settings):
    """``serving.admin_services(settings)`` finds ``campaigns.grpc_services`` (what `sightline serve` runs)."""
    import serving
    from proto import admin_pb2 as pb
    from proto import admin_pb2_grpc

    settings = make_settings()
    services = [s for s in serving.admin_services(settings) if s.name == "sightline.v1.CampaignAdminService"]
    assert len(services) == 1
    keys = serving.ApiKeyStore.from_settings(settings)
    key = keys.create_key("ops", ["admin:campaigns"])
    server = serving.build_server(settings, services, api_keys=keys, host="127.0.0.1", port=0).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = admin_pb2_grpc.CampaignAdminServiceStub(channel)
            stub.CreateAdvertiser(pb.Advertiser(id="acme", name="ACME", currency="EUR"), metadata=md(key))
            assert [a.id for a in stub.ListAdvertisers(pb.ListAdvertisersRequest(), metadata=md(key)).advertisers] == ["acme"]
    finally:
        server.stop(grace=0)
        keys.close()
