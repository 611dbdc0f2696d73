"""Hostile Recommend requests against a real server (serving's validation through gRPC):
property-based requests, raw garbage bodies and oversize messages — no crash, no hang,
a clear status with the bad field named, and the server keeps serving good requests."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import events_pb2 as ev
from proto import serving_pb2, serving_pb2_grpc
from serving import ERROR_FIELD_METADATA

pytestmark = pytest.mark.integration

CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from serving import ApiKeyStore, MemoryEventLog, build_server, recommendation_service
    from sightline.settings import load_settings

    s = load_settings(env={}, data_dir=tmp_path_factory.mktemp("hostile") / "data",
                      serving={"port": 0, "rate_limit_rps": 10_000, "rate_limit_burst": 10_000})
    keys = ApiKeyStore.from_settings(s)
    key = keys.create_key("fuzzer", ["recommend", "feedback"])
    srv = build_server(s, [recommendation_service(s, events=MemoryEventLog(), feature_store=False,
                                                  use_experiments=False, seed=1)], keys).start()
    channel = grpc.insecure_channel(srv.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    yield srv, channel, [("x-api-key", key)]
    channel.close()
    srv.stop(0)
    keys.close()


def good_request():
    return serving_pb2.RecommendRequest(
        app_id="app", user_id="u1", consent=ev.Consent(context=True, personalization=True, measurement=True),
        context=ev.Context(device=ev.PHONE, scene="gym", objects=["running_shoe"], intent_text="running shoes",
                           location_category="retail", region="DE", local_hour=9, local_weekday=1),
        surfaces=serving_pb2.Surfaces(ad_slots=2, suggestions=3))


def _assert_healthy(stub, md):
    assert stub.Recommend(good_request(), metadata=md, timeout=5).request_id


_txt = st.text(max_size=200)
_int = st.integers(-2**31, 2**31 - 1)
requests = st.builds(
    lambda app, uid, c, p, m, dev, scene, objs, intent, loc, region, h, wd, ads, sugg, rid: serving_pb2.RecommendRequest(
        app_id=app, user_id=uid, request_id=rid, consent=ev.Consent(context=c, personalization=p, measurement=m),
        context=ev.Context(device=dev, scene=scene, objects=objs, intent_text=intent, location_category=loc,
                           region=region, local_hour=h, local_weekday=wd),
        surfaces=serving_pb2.Surfaces(ad_slots=ads, suggestions=sugg)),
    st.one_of(st.just("app"), _txt), st.one_of(st.just("u1"), _txt), st.just(True) | st.booleans(), st.booleans(),
    st.booleans(), st.one_of(st.integers(0, 2), _int), st.one_of(st.just("gym"), _txt),
    st.lists(st.one_of(st.just("running_shoe"), _txt), max_size=40), st.text(max_size=1500),
    st.one_of(st.just("retail"), _txt), st.one_of(st.just("DE-BE"), _txt), st.one_of(st.integers(0, 23), _int),
    st.one_of(st.integers(0, 6), _int), st.one_of(st.integers(0, 10), _int), st.one_of(st.integers(0, 50), _int),
    st.one_of(st.just(""), _txt))


@settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_any_recommend_request_gets_a_reply_or_a_clear_error(server, request):
    _, channel, md = server
    stub = serving_pb2_grpc.RecommendationServiceStub(channel)
    try:
        reply = stub.Recommend(request, metadata=md, timeout=5)
    except grpc.RpcError as err:
        assert err.code() in CLEAR, (err.code(), err.details())
        assert err.details() and len(err.details()) < 1000
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert dict(err.trailing_metadata() or ()).get(ERROR_FIELD_METADATA), "the bad field must be named"
        return
    assert len(reply.ads) <= request.surfaces.ad_slots and len(reply.suggestions) <= request.surfaces.suggestions


def test_garbage_bodies_do_not_hurt_the_server(server):
    _, channel, md = server
    raw = channel.unary_unary("/sightline.v1.RecommendationService/Recommend")  # bytes in, bytes out
    codes = set()
    for body in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x22\x05abc", bytes(range(256))):
        with pytest.raises(grpc.RpcError) as info:
            raw(body, metadata=md, timeout=5)
        codes.add(info.value.code())
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}, codes
    _assert_healthy(serving_pb2_grpc.RecommendationServiceStub(channel), md)


def test_oversize_requests_are_refused_and_the_server_keeps_serving(server):
    srv, channel, md = server
    stub = serving_pb2_grpc.RecommendationServiceStub(channel)
    big = good_request()
    big.context.intent_text = "x" * (srv_max := 256 * 1024 + 1)
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(big, metadata=md, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert srv_max > 256 * 1024
    _assert_healthy(stub, md)


def test_unauthenticated_garbage_is_refused_before_parsing(server):
    _, channel, _ = server
    raw = channel.unary_unary("/sightline.v1.RecommendationService/Recommend")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff" * 64, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
