"""build_server against real gRPC on 127.0.0.1: health, reflection, error mapping,
API-key auth and scopes, per-key rate limits, TLS with a self-signed certificate."""

import logging
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto import serving_pb2, serving_pb2_grpc
from serving import ERROR_FIELD_METADATA, ApiKeyStore, Service, build_server, current_caller
from serving.errors import InvalidRequest, ServerConfigError

pytestmark = pytest.mark.integration


class _Servicer(serving_pb2_grpc.RecommendationServiceServicer):
    """Behaves according to request_id, to exercise the error interceptor."""

    def Recommend(self, request, context):  # noqa: N802
        if request.request_id == "invalid":
            raise InvalidRequest("surfaces.ad_slots is 11; use 0..10", field="surfaces.ad_slots")
        if request.request_id == "boom":
            raise ValueError("a bug")
        if request.request_id == "abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "servicer's own abort")
        if request.request_id == "thread":
            return serving_pb2.RecommendResponse(request_id=threading.current_thread().name)
        if request.request_id == "slow":
            time.sleep(0.3)
        caller = current_caller()
        return serving_pb2.RecommendResponse(request_id=caller.owner if caller else "anonymous")

    def ReportFeedback(self, request, context):  # noqa: N802
        if request.impression_token == "abort":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted off the loop")
        return serving_pb2.FeedbackResponse(event_id=threading.current_thread().name)


def _service():
    """Recommend runs inline (on the event loop under asyncio), ReportFeedback on the workers."""
    return Service("sightline.v1.RecommendationService", serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                   _Servicer(), {"Recommend": "recommend", "ReportFeedback": "feedback"},
                   inline=frozenset({"Recommend"}))


@pytest.fixture
def keys(make_settings):
    settings = make_settings()
    store = ApiKeyStore.from_settings(settings)
    yield store
    store.close()


@pytest.fixture(params=["asyncio", "threads"])
def running(request, make_settings, keys):
    settings = make_settings(serving={"port": 0, "rate_limit_rps": 1, "rate_limit_burst": 1000,
                                      "runtime": request.param})
    server = build_server(settings, [_service()], keys).start()
    channel = grpc.insecure_channel(server.address)
    yield server, channel, serving_pb2_grpc.RecommendationServiceStub(channel)
    channel.close()
    server.stop(0)


def _code(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_health_and_reflection_are_public(running):
    server, channel, _ = running
    assert server.port > 0
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(
        service="sightline.v1.RecommendationService")).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"sightline.v1.RecommendationService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_missing_and_unknown_keys_are_unauthenticated(running):
    _, _, stub = running
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "x-api-key" in err.details()
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(), metadata=[("x-api-key", "slk_nope_x")]))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_scope_is_enforced_per_method(running, keys):
    _, _, stub = running
    key = keys.create_key("feedback-only", ["feedback"])
    assert stub.ReportFeedback(serving_pb2.FeedbackRequest(), metadata=[("x-api-key", key)]).event_id.startswith("serving")
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(), metadata=[("x-api-key", key)]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "recommend" in err.details()


def test_caller_is_visible_to_the_servicer_and_revocation_bites(running, keys):
    _, _, stub = running
    key = keys.create_key("app-one", ["recommend"])
    assert stub.Recommend(serving_pb2.RecommendRequest(), metadata=[("x-api-key", key)]).request_id == "app-one"
    from serving import key_id_of
    keys.revoke(key_id_of(key))
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(), metadata=[("x-api-key", key)]))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.details()


def test_errors_map_to_status_with_the_bad_field(running, keys):
    _, _, stub = running
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(request_id="invalid"), metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ad_slots" in err.details()
    assert dict(err.trailing_metadata())[ERROR_FIELD_METADATA] == "surfaces.ad_slots"
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(request_id="boom"), metadata=md))
    assert err.code() == grpc.StatusCode.INTERNAL and "ValueError" in err.details()
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(request_id="abort"), metadata=md))
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "servicer's own abort"
    md = [("x-api-key", keys.create_key("app", ["feedback"]))]
    err = _code(lambda: stub.ReportFeedback(serving_pb2.FeedbackRequest(impression_token="abort"), metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details() == "aborted off the loop"


def test_a_body_that_does_not_parse_is_invalid_argument_after_auth(running, keys):
    _, channel, _ = running
    raw = channel.unary_unary("/sightline.v1.RecommendationService/Recommend")   # bytes in, bytes out
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    err = _code(lambda: raw(b"\x0a\xff\xff\xff\xff\x0f", metadata=md, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "not a valid sightline.v1.RecommendRequest" in err.details() and "send a serialized" in err.details()
    err = _code(lambda: raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=5))       # no key: refused before the body matters
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_runtime_decides_which_thread_runs_a_method(running, keys):
    """asyncio: the inline method on the event-loop thread, the other on a worker;
    threads: both on workers."""
    server, _, stub = running
    md = [("x-api-key", keys.create_key("app", ["recommend", "feedback"]))]
    recommend = stub.Recommend(serving_pb2.RecommendRequest(request_id="thread"), metadata=md).request_id
    feedback = stub.ReportFeedback(serving_pb2.FeedbackRequest(impression_token="t"), metadata=md).event_id
    asyncio_runtime = type(server.grpc_server).__name__ == "LoopServer"
    assert recommend == ("serving-loop" if asyncio_runtime else recommend) and recommend.startswith("serving")
    assert feedback.startswith("serving_") and feedback != "serving-loop"
    if not asyncio_runtime:
        assert recommend.startswith("serving_")


def test_a_caller_that_gave_up_costs_no_error_traceback(running, keys, caplog):
    """The caller already got DEADLINE_EXCEEDED: the late reply is no server error.
    (grpc's aio server logs one in some cases, under overload; tests/unit/serving/test_aio.py
    checks the filter that counts those instead.)"""
    server, _, stub = running
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    with caplog.at_level(logging.INFO):
        err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(request_id="slow"), metadata=md, timeout=0.05))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)                      # the handler finishes and its reply finds no caller
        assert stub.Recommend(serving_pb2.RecommendRequest(), metadata=md).request_id == "app"
        server.stop(1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_asyncio_runtime_refuses_streaming_services(make_settings, keys):
    from grpc_health.v1 import health

    streaming = Service("grpc.health.v1.Health", health_pb2_grpc.add_HealthServicer_to_server, health.HealthServicer(),
                        {"Check": "recommend", "List": "recommend", "Watch": "recommend"})
    with pytest.raises(ServerConfigError, match="Watch streams; set SIGHTLINE_SERVING_RUNTIME=threads"):
        build_server(make_settings(serving={"port": 0, "runtime": "asyncio"}), [streaming], keys)


def test_rate_limit_answers_resource_exhausted(running, keys):
    _, _, stub = running
    md = [("x-api-key", keys.create_key("slow-app", ["recommend"], rate_per_s=0.01, burst=2))]
    stub.Recommend(serving_pb2.RecommendRequest(), metadata=md)
    stub.Recommend(serving_pb2.RecommendRequest(), metadata=md)
    err = _code(lambda: stub.Recommend(serving_pb2.RecommendRequest(), metadata=md))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.details()
    # another key is unaffected
    other = [("x-api-key", keys.create_key("fast-app", ["recommend"]))]
    stub.Recommend(serving_pb2.RecommendRequest(), metadata=other)


def _two_servers_answer(servers, md) -> int:
    answered = 0
    for i in range(6):
        with grpc.insecure_channel(servers[i % 2].address) as channel:
            stub = serving_pb2_grpc.RecommendationServiceStub(channel)
            try:
                stub.Recommend(serving_pb2.RecommendRequest(), metadata=md, timeout=10)
                answered += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
    return answered


def test_prod_servers_share_a_keys_rate_limit_in_redis(make_settings, keys, redis_url):
    """Two servers behind a load balancer (profile prod: the online store is Redis) grant a key's
    burst once between them."""
    md = [("x-api-key", keys.create_key("fleet", ["recommend"], rate_per_s=0.01, burst=3))]
    settings = make_settings(feast={"online_store": "redis", "redis_url": redis_url}, serving={"port": 0})
    servers = [build_server(settings, [_service()], keys).start() for _ in range(2)]
    try:
        assert _two_servers_answer(servers, md) == 3, "each server granted the key's burst on its own"
    finally:
        for server in servers:
            server.stop(0)


def test_a_configured_rate_limit_file_is_shared_and_a_bad_one_is_refused(make_settings, keys, tmp_path):
    """Two servers started apart that name one bucket file grant a key's burst once between them."""
    shared = tmp_path / "buckets"
    md = [("x-api-key", keys.create_key("two-servers", ["recommend"], rate_per_s=0.01, burst=3))]
    servers = [build_server(make_settings(serving={"port": 0, "rate_limit_file": str(shared)}), [_service()], keys).start()
               for _ in range(2)]
    try:
        answered = _two_servers_answer(servers, md)
        assert answered == 3, f"{answered} calls answered over two servers sharing a burst of 3"
    finally:
        for server in servers:
            server.stop(0)
    (tmp_path / "junk").write_bytes(b"not a bucket file")
    with pytest.raises(ServerConfigError, match="serving.rate_limit_file"):
        build_server(make_settings(serving={"port": 0, "rate_limit_file": str(tmp_path / "junk")}), [_service()], keys)


def test_oversize_message_is_refused(make_settings):
    settings = make_settings(serving={"port": 0, "require_api_key": False, "max_message_bytes": 4096})
    with build_server(settings, [_service()]) as server, grpc.insecure_channel(server.address) as channel:
        stub = serving_pb2_grpc.RecommendationServiceStub(channel)
        big = serving_pb2.RecommendRequest(context={"intent_text": "x" * 10_000})
        err = _code(lambda: stub.Recommend(big))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Recommend(serving_pb2.RecommendRequest()).request_id == "anonymous"


def test_every_method_must_declare_a_scope(make_settings):
    settings = make_settings(serving={"port": 0, "require_api_key": False})
    partial = Service("sightline.v1.RecommendationService", serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                      _Servicer(), {"Recommend": "recommend"})
    with pytest.raises(ServerConfigError, match="ReportFeedback"):
        build_server(settings, [partial])
    bad = Service("sightline.v1.RecommendationService", serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                  _Servicer(), {"Recommend": "admin", "ReportFeedback": "feedback"})
    with pytest.raises(ServerConfigError, match="unknown scope"):
        build_server(settings, [bad])


def test_tls_with_a_self_signed_certificate(make_settings, tmp_path, keys):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    settings = make_settings(serving={"port": 0, "tls_cert": cert, "tls_key": key})
    with build_server(settings, [_service()], keys) as server:
        assert server.tls
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{server.port}", creds) as channel:
            stub = serving_pb2_grpc.RecommendationServiceStub(channel)
            md = [("x-api-key", keys.create_key("tls-app", ["recommend"]))]
            assert stub.Recommend(serving_pb2.RecommendRequest(), metadata=md, timeout=5).request_id == "tls-app"
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plain:
            err = _code(lambda: serving_pb2_grpc.RecommendationServiceStub(plain).Recommend(
                serving_pb2.RecommendRequest(), timeout=2))
            assert err.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("runtime", ["asyncio", "threads"])
def test_a_taken_port_is_a_config_error_and_leaves_no_server_thread(make_settings, keys, runtime):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerConfigError, match=f"cannot bind 127.0.0.1:{port}.*choose another serving.port"):
            build_server(make_settings(serving={"port": port, "runtime": runtime}), [_service()], keys)
    deadline = time.monotonic() + 5
    while any(t.name == "serving-loop" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "serving-loop" for t in threading.enumerate()), "the event-loop thread outlived the failed build"
