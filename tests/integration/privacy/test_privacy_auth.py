"""AuthN/Z from the security angle, on a real gRPC server with the real PrivacyAdminService.

serving's own tests cover scopes on Recommend, key revocation, rate limits per key,
oversize messages and TLS with a plaintext client; these add what an attacker would try
against the admin surface: lesser keys, no key, keys read from the DB file, a forged
certificate authority, and an admin key hammering erasure.
"""

from __future__ import annotations

import subprocess

import grpc
import pytest

from privacy import Tombstones, grpc_services
from proto import privacy_pb2, privacy_pb2_grpc, serving_pb2, serving_pb2_grpc
from serving import SCOPES, ApiKeyStore, Service, build_server, key_id_of

pytestmark = pytest.mark.integration


class _Recommend(serving_pb2_grpc.RecommendationServiceServicer):
    def Recommend(self, request, context):  # noqa: N802
        return serving_pb2.RecommendResponse(request_id="ok")

    def ReportFeedback(self, request, context):  # noqa: N802
        return serving_pb2.FeedbackResponse(event_id="ok")


def _services(settings):
    rec = Service("sightline.v1.RecommendationService", serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                  _Recommend(), {"Recommend": "recommend", "ReportFeedback": "feedback"})
    return [rec, *grpc_services(settings)]


@pytest.fixture
def server(populated):
    s = populated.settings.model_copy(update={"serving": populated.settings.serving.model_copy(update={"port": 0})})
    keys = ApiKeyStore.from_settings(s)
    srv = build_server(s, _services(s), keys).start()
    channel = grpc.insecure_channel(srv.address)
    yield srv, keys, privacy_pb2_grpc.PrivacyAdminServiceStub(channel), populated
    channel.close()
    srv.stop(0)
    keys.close()


def _err(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.mark.parametrize("scope", [s for s in SCOPES if s != "admin:privacy"])
def test_only_admin_privacy_may_erase(server, scope):
    _, keys, stub, pop = server
    md = [("x-api-key", keys.create_key(f"holder-of-{scope}", [scope]))]
    err = _err(lambda: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=pop.victim_app_id), metadata=md, timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "admin:privacy" in err.details()
    assert not Tombstones(pop.settings).contains(pop.victim), "a refused call must have no effect"


def test_admin_privacy_key_erases_and_is_named_in_the_receipt(server):
    _, keys, stub, pop = server
    md = [("x-api-key", keys.create_key("dpo-team", ["admin:privacy"]))]
    receipt = stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=pop.victim_app_id, reason="ticket-1"),
                             metadata=md, timeout=30)
    assert receipt.user_pseudonym == pop.victim and receipt.requested_by == "dpo-team" and receipt.tombstoned
    by_store = {}
    for s in receipt.stores:
        by_store[s.store] = by_store.get(s.store, 0) + s.deleted
    assert by_store["feast_online_sqlite"] == pop.online_rows_per_user
    assert by_store["event_log_feedback"] == 3 and by_store["event_log_exposures"] == 2
    assert receipt.total_deleted == sum(by_store.values())
    err = _err(lambda: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=""), metadata=md, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in err.details()


def test_every_non_public_method_needs_a_key_and_revoked_admin_keys_stop(server):
    srv, keys, stub, pop = server
    channel = grpc.insecure_channel(srv.address)
    rec = serving_pb2_grpc.RecommendationServiceStub(channel)
    for call in (lambda md: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id="u"), metadata=md, timeout=10),
                 lambda md: rec.Recommend(serving_pb2.RecommendRequest(), metadata=md, timeout=10),
                 lambda md: rec.ReportFeedback(serving_pb2.FeedbackRequest(), metadata=md, timeout=10)):
        for md in ([], [("x-api-key", "")], [("x-api-key", "slk_nope_nope")], [("authorization", "Bearer x")]):
            assert _err(lambda: call(md)).code() == grpc.StatusCode.UNAUTHENTICATED
    admin = keys.create_key("leaver", ["admin:privacy"])
    keys.revoke(key_id_of(admin))
    err = _err(lambda: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=pop.victim_app_id),
                                      metadata=[("x-api-key", admin)], timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not Tombstones(pop.settings).contains(pop.victim)
    channel.close()


def _secret_of(key: str) -> str:
    """The secret part of ``slk_<key_id>_<secret>``; the url-safe secret may itself hold
    '_', so splitting from the right once could leave a single character (a flake: any
    one-byte 'secret' is found in a SQLite file)."""
    secret = key.split("_", 2)[2]
    assert len(secret) >= 32, f"unexpected key shape {key!r}"
    return secret


def test_secret_of_keeps_underscores_inside_the_secret():
    assert _secret_of("slk_7fff25b22595_VCl9q_e7d3ygU9DL2frbSf0wZXtlk8yWdm9MAqUum_k") == \
        "VCl9q_e7d3ygU9DL2frbSf0wZXtlk8yWdm9MAqUum_k"


def test_key_plaintext_never_reaches_the_database_files(server):
    srv, keys, stub, pop = server
    plain = [keys.create_key("app", ["recommend"]), keys.create_key("dpo", ["admin:privacy"])]
    stub.EraseUser(privacy_pb2.EraseUserRequest(user_id="someone"), metadata=[("x-api-key", plain[1])], timeout=30)
    db_files = [p for p in pop.settings.data_dir.rglob("campaigns.db*") if p.is_file()]
    assert db_files, "the API keys live in the campaign database"
    for path in db_files:
        blob = path.read_bytes()
        for key in plain:
            secret = _secret_of(key)
            assert key.encode() not in blob and secret.encode() not in blob, f"plaintext key in {path.name}"
            assert key_id_of(key).encode() in blob or path.name != "campaigns.db"  # only the public id is stored
    # nor anywhere else under the data directory (logs, receipts, tombstones)
    for path in pop.settings.data_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(_secret_of(k).encode() in blob for k in plain), path


def test_admin_keys_are_rate_limited_too(server):
    _, keys, stub, pop = server
    md = [("x-api-key", keys.create_key("script", ["admin:privacy"], rate_per_s=0.01, burst=2))]
    for i in range(2):
        stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=f"nobody-{i}"), metadata=md, timeout=30)
    err = _err(lambda: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=pop.victim_app_id), metadata=md, timeout=10))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.details()
    assert not Tombstones(pop.settings).contains(pop.victim)


def _self_signed(tmp_path, name):
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    try:
        from cryptography import x509  # noqa: F401 - preferred when installed
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        return cert, key
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
         .sign(pk, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cert, key


def test_tls_admin_calls_need_the_right_ca_and_still_a_key(populated, tmp_path):
    cert, key = _self_signed(tmp_path, "server")
    forged, _ = _self_signed(tmp_path, "forged")
    s = populated.settings
    s = s.model_copy(update={"serving": s.serving.model_copy(update={"port": 0, "tls_cert": cert, "tls_key": key})})
    keys = ApiKeyStore.from_settings(s)
    with build_server(s, _services(s), keys) as srv:
        admin = [("x-api-key", keys.create_key("dpo", ["admin:privacy"]))]
        good = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{srv.port}", good) as ch:
            stub = privacy_pb2_grpc.PrivacyAdminServiceStub(ch)
            err = _err(lambda: stub.EraseUser(privacy_pb2.EraseUserRequest(user_id="u"), timeout=10))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, "TLS does not replace the API key"
            assert stub.EraseUser(privacy_pb2.EraseUserRequest(user_id=populated.victim_app_id), metadata=admin,
                                  timeout=30).total_deleted > 0
        bad = grpc.ssl_channel_credentials(root_certificates=forged.read_bytes())
        with grpc.secure_channel(f"localhost:{srv.port}", bad) as ch:
            err = _err(lambda: privacy_pb2_grpc.PrivacyAdminServiceStub(ch).EraseUser(
                privacy_pb2.EraseUserRequest(user_id="u"), metadata=admin, timeout=5))
            assert err.code() == grpc.StatusCode.UNAVAILABLE, "a client must refuse a server its CA did not sign"
    keys.close()


def test_every_method_of_the_full_server_refuses_every_other_scope(kafka_settings):
    """On the server `sightline serve` builds (all admin packages), each method answers
    PERMISSION_DENIED to a key holding every scope except the one it requires, and
    UNAUTHENTICATED without a key — checked before the request is even parsed."""
    from features import apply_repo
    from serving import app_services

    s = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(update={"port": 0})})
    apply_repo(s)
    services = app_services(s)
    keys = ApiKeyStore.from_settings(s)
    checked = 0
    with build_server(s, services, keys) as server, grpc.insecure_channel(server.address) as channel:
        all_but = {scope: keys.create_key(f"all-but-{scope}", [x for x in SCOPES if x != scope]) for scope in SCOPES}
        for svc in services:
            for method, scope in svc.full_scopes().items():
                call = channel.unary_unary(method)  # raw bytes: an empty message of any type
                err = _err(lambda: call(b"", metadata=[("x-api-key", all_but[scope])], timeout=10))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (method, err.code(), err.details())
                assert scope in err.details()
                assert _err(lambda: call(b"", timeout=10)).code() == grpc.StatusCode.UNAUTHENTICATED, method
                checked += 1
    keys.close()
    assert checked >= 3, f"only {checked} methods found: {[svc.name for svc in services]}"
