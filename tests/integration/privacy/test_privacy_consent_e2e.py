"""The consent table against the real stages.

Streaming: its public ``Pipeline`` (real ``StateStore``, real ``FeastSink`` on the Feast
SQLite online + parquet offline stores, the lexicon matcher) fed with encoded events.
Serving: a real gRPC server built by ``serving.recommendation_service`` on a small
campaign world and the same Feast repo. Each test names the table cell it checks;
pseudonymization and tombstones are checked where the stages should apply them.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from privacy import ConsentFlags, Tombstones, allowed, erase_user, pseudonymize
from proto import events_pb2 as ev

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)


# --------------------------------------------------------------------------- streaming
class _DeadLetters:
    def __init__(self):
        self.sent = []

    def send(self, record, kind, error):
        self.sent.append((kind, error.reason))


@pytest.fixture(params=["inline", "writer_process"])
def pipeline(request, feast_settings):
    """Both ways a worker writes: inline, and through the writer process that also computes
    the user-keyed views and buffers their offline rows (what ``IngestWorker`` uses)."""
    from features import open_store
    from privacy import tombstone_path
    from streaming import FeastSink, LexiconMatcher, Pipeline, StateStore, WindowParams, state_path
    from streaming._online_writer import Recompute

    s = feast_settings
    store = open_store(s)
    state = StateStore(state_path(s.data_dir))
    sink = FeastSink(store, s.feast_dir, background=request.param == "writer_process")
    sink.start(recompute=Recompute(str(state_path(s.data_dir)), str(s.feast_dir), str(tombstone_path(s.data_dir)),
                                   WindowParams()))
    assert sink.recomputes("user_context") == (request.param == "writer_process")
    p = Pipeline(kinds_by_topic={s.topic(k): k for k in ("context", "consent", "feedback", "exposures")},
                 state=state, sink=sink, dead_letters=_DeadLetters(),
                 matcher=LexiconMatcher(), data_dir=s.data_dir, max_message_bytes=s.streaming.max_message_bytes)
    p.settings, p.store = s, store
    yield p
    sink.close()
    state.close()


def _consent(flags: ConsentFlags):
    return ev.Consent(context=flags.context, personalization=flags.personalization, measurement=flags.measurement)


def _record(p, kind, msg):
    from streaming import Record, encode_event

    key, value, headers = encode_event(msg)
    return Record(p.settings.topic(kind), 0, 0, value, key, headers)


def _context(uid, flags, *, t_ms=None, objects=("running_shoe",), scene="store_aisle", intent="I need running shoes"):
    return ev.ContextEvent(event_id=uuid.uuid4().hex, event_time_ms=t_ms or int(time.time() * 1000), user_id=uid,
                           consent=_consent(flags), app_id="app",
                           context=ev.Context(device=ev.GLASSES, scene=scene, objects=list(objects),
                                              intent_text=intent, location_category="retail", region="DE-BE",
                                              local_hour=10, local_weekday=2))


def _feedback(uid, flags, *, t_ms=None):
    return ev.FeedbackEvent(event_id=uuid.uuid4().hex, event_time_ms=t_ms or int(time.time() * 1000), user_id=uid,
                            consent=_consent(flags), type=ev.IMPRESSION, impression_token="tok", request_id="r1",
                            item_kind=ev.AD, item_id="cr-1", campaign_id="c-1", advertiser_id="a-1",
                            category="sports/running_shoes", position=0, spend=0.01, app_id="app")


def _exposure(uid, flags):
    return ev.ExposureEvent(event_id=uuid.uuid4().hex, event_time_ms=int(time.time() * 1000), user_id=uid,
                            consent=_consent(flags), experiment_id="e1", layer="l1", arm="b", unit_type="user",
                            unit_id=uid, request_id="r1")


def _ingest(p, *events):
    p.process([_record(p, kind, m) for kind, m in events])
    p.flush()


def _user_online(p, uid) -> dict:
    """The user's online features, looked up as serving does: by the pseudonym of the app's id."""
    from features import VIEWS

    out = {}
    for view in (v for v in VIEWS if v.user_keyed):
        got = p.store.get_online_features(features=[f"{view.name}:{n}" for n in view.feature_names],
                                          entity_rows=[{"user_id": pseudonymize(uid, p.settings.privacy.hmac_key)}]
                                          ).to_dict()
        out.update({k: v[0] for k, v in got.items() if k != "user_id" and v[0] not in (None, [], 0)})
    return out


def _offline_users(p) -> set:
    import pyarrow.parquet as pq

    from features import VIEWS, offline_dir

    ids = set()
    for view in (v for v in VIEWS if v.user_keyed):
        for part in offline_dir(p.settings.feast_dir, view.name).glob("part-*.parquet"):
            ids.update(pq.read_table(part, columns=["user_id"]).column(0).to_pylist())
    return ids


def _popularity_keys(p) -> set:
    import pyarrow.parquet as pq

    from features import offline_dir

    keys = set()
    for part in offline_dir(p.settings.feast_dir, "context_popularity").glob("part-*.parquet"):
        keys.update(pq.read_table(part, columns=["context_key"]).column(0).to_pylist())
    return keys


def _logged(p, kind) -> list:
    from features import read_events

    return read_events(p.settings.data_dir, kind)["user_id"].to_list()


ALL = ConsentFlags.all()


def test_cell_context_x_ingestion_and_feature_store(pipeline):
    """Without context: the event is dropped; no user features, not counted in aggregates."""
    flags = ALL.without("context")
    assert not allowed(flags, "ingestion", "accept_context_event")
    assert not allowed(flags, "feature_store", "count_in_aggregates")
    _ingest(pipeline, ("context", _context("u-noctx", flags)), ("feedback", _feedback("u-noctx", flags)))
    assert _user_online(pipeline, "u-noctx") == {}
    assert "u-noctx" not in _offline_users(pipeline)
    assert _popularity_keys(pipeline) == set(), "a dropped event must not count in scene×category popularity"
    assert _logged(pipeline, "feedback") == []


def test_cell_personalization_x_feature_store(pipeline):
    """Without personalization: nothing user-keyed written; aggregates still count."""
    flags = ALL.without("personalization")
    assert not allowed(flags, "feature_store", "write_user_features")
    assert allowed(flags, "feature_store", "count_in_aggregates")
    _ingest(pipeline, ("context", _context("u-nopers", flags)))
    assert _user_online(pipeline, "u-nopers") == {}
    assert "u-nopers" not in _offline_users(pipeline)
    assert _popularity_keys(pipeline), "the event counts in scene×category aggregates"


def test_cell_personalization_withdrawal_deletes_the_profile(pipeline):
    """ingestion/apply_consent_event: a withdrawal deletes the stored profile online."""
    _ingest(pipeline, ("context", _context("u-w", ALL)))
    assert _user_online(pipeline, "u-w"), "precondition: the profile exists"
    withdraw = ev.ConsentEvent(event_id=uuid.uuid4().hex, event_time_ms=int(time.time() * 1000), user_id="u-w",
                               consent=_consent(ALL.without("personalization")))
    _ingest(pipeline, ("consent", withdraw))
    assert _user_online(pipeline, "u-w") == {}


def test_withdrawal_before_the_flush_keeps_buffered_rows_out_of_the_offline_store(pipeline):
    """A profile computed earlier in the same flush interval is buffered, not yet written
    offline: the withdrawal must drop it there too, wherever the buffer lives."""
    pipeline.process([_record(pipeline, "context", _context("u-buffered", ALL)),
                      _record(pipeline, "context", _context("u-kept", ALL))])
    withdraw = ev.ConsentEvent(event_id=uuid.uuid4().hex, event_time_ms=int(time.time() * 1000) + 1,
                               user_id="u-buffered", consent=_consent(ALL.without("personalization")))
    pipeline.process([_record(pipeline, "consent", withdraw)])
    pipeline.flush()
    key = pipeline.settings.privacy.hmac_key
    offline = _offline_users(pipeline)
    assert pseudonymize("u-kept", key) in offline, "precondition: buffered profiles reach the offline store"
    assert pseudonymize("u-buffered", key) not in offline


def test_cell_measurement_x_logging_and_experiments(pipeline):
    """Without measurement: feedback and exposures are not logged; with it they are."""
    flags = ALL.without("measurement")
    assert not allowed(flags, "logging", "log_feedback_event") and not allowed(flags, "experiments", "log_exposure")
    _ingest(pipeline, ("feedback", _feedback("u-nomeas", flags)), ("exposures", _exposure("u-nomeas", flags)),
            ("feedback", _feedback("u-meas", ALL)), ("exposures", _exposure("u-meas", ALL)))
    fb, ex = _logged(pipeline, "feedback"), _logged(pipeline, "exposures")
    assert "u-nomeas" not in fb and "u-nomeas" not in ex
    assert len(fb) == 1 and len(ex) == 1, (fb, ex)


def test_sensitive_categories_never_become_features(pipeline):
    """Sensitive objects, intents and scenes are dropped at ingestion (streaming's filter)."""
    from campaigns import SENSITIVE_TOPS

    _ingest(pipeline, ("context", _context("u-sens", ALL, objects=("pill", "running_shoe", "rosary"),
                                           scene="church", intent="where is the nearest pharmacy for my pregnancy test")))
    feats = _user_online(pipeline, "u-sens")
    flat = repr(sorted(feats.items()))
    assert "running_shoe" in flat, "the safe object is kept"
    for word in ("pill", "rosary", "church", "pharmacy", "pregnan", *SENSITIVE_TOPS):
        assert word not in flat, f"sensitive {word!r} became a user feature: {flat}"
    for key in _popularity_keys(pipeline):
        scene, _, category = key.partition("|")
        assert scene != "church" and category.split("/")[0] not in SENSITIVE_TOPS, key


def test_streaming_stores_pseudonyms_not_app_ids(pipeline):
    """Stored user ids must be privacy.pseudonymize(app id) (gap if streaming stores the app's id)."""
    app_id = "app-user-plain-1"
    _ingest(pipeline, ("context", _context(app_id, ALL)), ("feedback", _feedback(app_id, ALL)))
    stored = _offline_users(pipeline) | set(_logged(pipeline, "feedback"))
    pseudonym = pseudonymize(app_id, pipeline.settings.privacy.hmac_key)
    assert app_id not in stored and pseudonym in stored, (
        f"streaming stored {sorted(stored)}; it must store pseudonymize(user_id, settings.privacy.hmac_key)")


def test_streaming_drops_late_events_of_an_erased_user(pipeline):
    """After erasure, an event produced before it (a late or replayed one) must not re-create the user."""
    s = pipeline.settings
    app_id = "app-user-erased"
    before_ms = int(time.time() * 1000) - 5_000
    receipt = erase_user(s, app_id)
    stored_as = pseudonymize(app_id, s.privacy.hmac_key)
    assert Tombstones(s).drops(stored_as, before_ms)
    _ingest(pipeline, ("context", _context(app_id, ALL, t_ms=before_ms)), ("feedback", _feedback(app_id, ALL, t_ms=before_ms)))
    leaked = ({app_id, stored_as} & (_offline_users(pipeline) | set(_logged(pipeline, "feedback")))
              or _user_online(pipeline, app_id) or _user_online(pipeline, stored_as))
    assert not leaked, (f"a late event of a user erased at {receipt.erased_at_ms} was stored again: {leaked}; "
                        "streaming must check privacy.Tombstones(settings).drops(uid, event_time_ms)")


def test_erasure_clears_streaming_state_so_no_recompute_recreates_the_user(pipeline):
    """Erasure removes the user's window buckets from the ingest state store too."""
    _ingest(pipeline, ("context", _context("u-state", ALL)))
    receipt = erase_user(pipeline.settings, "u-state")
    assert receipt.deleted("streaming_state") > 0 and receipt.deleted("feast_online_sqlite") > 0
    pipeline.recover()            # recomputes anything left dirty: must not bring the user back
    pipeline.flush()
    stored_as = pseudonymize("u-state", pipeline.settings.privacy.hmac_key)
    assert _user_online(pipeline, "u-state") == {} and stored_as not in _offline_users(pipeline)


# --------------------------------------------------------------------------- serving
def _seed_campaigns(settings):
    from campaigns import Advertiser, Campaign, CampaignStore, Product

    campaign = Campaign.from_doc({
        "id": "c-shoes", "advertiser_id": "shoeco", "name": "shoes", "status": "active",
        "schedule": {"start": (NOW - timedelta(days=1)).isoformat(), "end": (NOW + timedelta(days=30)).isoformat()},
        "budget": {"daily": 500.0, "currency": "EUR"}, "bid": {"strategy": "CPC", "amount": 1.0},
        "targeting": {"categories": ["sports/running_shoes"]}, "frequency_cap": {"per_day": 100},
        "creatives": [{"id": "c-shoes-cr0", "headline": "Run", "landing_url": "https://example.com/shoes",
                       "product_sku": "shoe-0"}],
    })
    product = Product(sku="shoe-0", title="Trail running shoes", brand="Velora", category="sports/running_shoes",
                      price=80.0, landing_url="https://shop.example.com/shoe-0", quality=0.8, advertiser_id="shoeco")
    store = CampaignStore.open(settings.campaign_db_url)
    store.bulk_load(advertisers=[Advertiser(id="shoeco", name="Shoeco", currency="EUR")], campaigns=[campaign],
                    products=[product], actor="test")
    store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, privacy_kit):
    """A real server: RecommendationService (real Feast, campaign store) + PrivacyAdminService."""
    from features import VIEWS, apply_repo, open_store
    from privacy import grpc_services
    from proto import privacy_pb2_grpc, serving_pb2_grpc
    from serving import ApiKeyStore, MemoryEventLog, build_server, recommendation_service
    from sightline.settings import load_settings

    view_frame = privacy_kit.view_frame

    s = load_settings(env={}, data_dir=tmp_path_factory.mktemp("privacy-serving") / "data",
                      serving={"port": 0, "feature_refresh_s": 0.5, "snapshot_refresh_s": 0.5})
    _seed_campaigns(s)
    apply_repo(s)
    store = open_store(s)
    known = pseudonymize("app-user-known", s.privacy.hmac_key)
    for view in (v for v in VIEWS if v.user_keyed):
        store.write_to_online_store(view.name, view_frame(view, [known], NOW))
    events = MemoryEventLog()
    rec = recommendation_service(s, events=events, use_experiments=False, seed=7)
    servicer = rec.servicer
    assert servicer.caps.kind == "sqlite", "the local profile keeps caps in the shared SQLite file"
    keys = ApiKeyStore.from_settings(s)
    key = keys.create_key("glasses-app", ["recommend", "feedback"])
    admin = keys.create_key("dpo", ["admin:privacy"])
    server = build_server(s, [rec, *grpc_services(s)], keys).start()
    channel = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(channel).result(timeout=10)

    class Served:
        settings, events_log = s, events
        stub = serving_pb2_grpc.RecommendationServiceStub(channel)
        privacy_stub = privacy_pb2_grpc.PrivacyAdminServiceStub(channel)
        md = [("x-api-key", key)]
        admin_md = [("x-api-key", admin)]

    Served.servicer = servicer
    yield Served
    channel.close()
    server.stop(1)
    keys.close()


def _request(uid, flags):
    from proto import serving_pb2

    return serving_pb2.RecommendRequest(
        app_id="glasses-app", user_id=uid, consent=_consent(flags), request_id=uuid.uuid4().hex,
        context=ev.Context(device=ev.GLASSES, scene="store_aisle", objects=["running_shoe"],
                           intent_text="I need running shoes", location_category="retail", region="DE-BE",
                           local_hour=10, local_weekday=2),
        surfaces={"ad_slots": 2, "suggestions": 3})


def test_cell_context_x_serving(served):
    """Without context: Recommend is refused (PERMISSION_DENIED) and nothing is logged."""
    before = len(served.events_log.events)
    with pytest.raises(grpc.RpcError) as info:
        served.stub.Recommend(_request("app-user-known", ALL.without("context")), metadata=served.md, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(served.events_log.events) == before


def test_cell_personalization_x_serving(served):
    """Without personalization: no user features read, no per-user counters; with it both happen."""
    caps_before = served.servicer.stats()["caps_users"]
    reply = served.stub.Recommend(_request("app-user-known", ALL.without("personalization")), metadata=served.md,
                                  timeout=10)
    assert not reply.personalized
    assert served.servicer.stats()["caps_users"] == caps_before, "no frequency counter without personalization"
    reply = served.stub.Recommend(_request("app-user-known", ALL), metadata=served.md, timeout=10)
    assert reply.personalized, "the user's features (stored under the pseudonym) are used with consent"
    assert reply.ads, "precondition: an ad was served"
    assert served.servicer.caps.counts(pseudonymize("app-user-known", served.settings.privacy.hmac_key),
                                       "c-shoes", int(time.time() // 86400))[0] >= 1, \
        "frequency counters are keyed by the pseudonym"


def test_cell_measurement_x_serving_logging(served):
    """Without measurement: the impression event carries no user id, request id or context."""
    from proto import events_pb2

    before = len(served.events_log.events)
    reply = served.stub.Recommend(_request("app-user-known", ALL.without("measurement")), metadata=served.md, timeout=10)
    assert reply.ads or reply.suggestions
    new = [m for _, m in served.events_log.events[before:] if isinstance(m, events_pb2.FeedbackEvent)]
    assert new, "impressions are still sent (aggregate delivery counters need them)"
    for m in new:
        assert m.user_id == "" and m.request_id == "" and not m.HasField("context") and not m.consent.measurement


def test_serving_pseudonym_is_privacy_pseudonym():
    """serving hashes user ids itself; it must stay identical to privacy.pseudonymize."""
    from serving import pseudonymize as serving_pseudonymize

    for uid, key in [("u1", "k"), ("ünï-🙂", "another key"), ("x" * 128, "local-development-key-change-me")]:
        assert serving_pseudonymize(uid, key) == pseudonymize(uid, key)


def test_grpc_erasure_clears_the_servers_frequency_counters(served):
    from proto import privacy_pb2

    served.stub.Recommend(_request("app-user-capped", ALL), metadata=served.md, timeout=10)
    assert served.servicer.caps.counts(pseudonymize("app-user-capped", served.settings.privacy.hmac_key),
                                       "c-shoes", int(time.time() // 86400))[0] >= 1
    receipt = served.privacy_stub.EraseUser(privacy_pb2.EraseUserRequest(user_id="app-user-capped"),
                                            metadata=served.admin_md, timeout=30)
    assert {s.store: s.deleted for s in receipt.stores}["serving_frequency_caps"] == 1
    assert served.servicer.caps.counts(pseudonymize("app-user-capped", served.settings.privacy.hmac_key),
                                       "c-shoes", int(time.time() // 86400)) == (0, 0)


def test_erasure_leaves_no_trace_of_the_user_in_the_ingest_state_file(pipeline):
    """After erasure, the ingest state DB (and its WAL) hold no bytes of the user's id —
    not in consent records, pending log rows, or freed pages."""
    from streaming import state_path

    grant = ev.ConsentEvent(event_id=uuid.uuid4().hex, event_time_ms=int(time.time() * 1000),
                                          user_id="u-trace-0123456789", consent=_consent(ALL))
    _ingest(pipeline, ("consent", grant), ("context", _context("u-trace-0123456789", ALL)),
            ("feedback", _feedback("u-trace-0123456789", ALL)))
    erase_user(pipeline.settings, "u-trace-0123456789", pseudonymous=True)
    path = state_path(pipeline.settings.data_dir)
    found = [p.name for p in path.parent.glob(path.name + "*") if b"u-trace-0123456789" in p.read_bytes()]
    assert not found, (f"the erased user's id is still in {found}: streaming's StateStore keeps the user's consent row "
                       "(erase_user_state removes buckets and dirty marks only) and freed pages (no secure_delete)")


def test_sightline_serve_composition_erases_the_servers_frequency_counters(kafka_settings):
    """The server `sightline serve` builds (serving.app_services) must wire its frequency
    counters into PrivacyAdminService, so EraseUser on a running server clears them."""
    from features import apply_repo
    from privacy import SERVICE_NAME
    from proto import privacy_pb2, privacy_pb2_grpc, serving_pb2_grpc
    from serving import RECOMMENDATION_SERVICE, ApiKeyStore, app_services, build_server

    s = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(update={"port": 0})})
    _seed_campaigns(s)
    apply_repo(s)
    services = app_services(s)
    assert SERVICE_NAME in [svc.name for svc in services], "sightline serve must serve PrivacyAdminService"
    rec = next(svc for svc in services if svc.name == RECOMMENDATION_SERVICE).servicer
    keys = ApiKeyStore.from_settings(s)
    app_md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    admin_md = [("x-api-key", keys.create_key("dpo", ["admin:privacy"]))]
    with build_server(s, services, keys) as server, grpc.insecure_channel(server.address) as channel:
        serving_pb2_grpc.RecommendationServiceStub(channel).Recommend(_request("app-user-x", ALL), metadata=app_md,
                                                                      timeout=20)
        user_key = pseudonymize("app-user-x", s.privacy.hmac_key)
        day = int(time.time() // 86400)
        assert rec.caps.counts(user_key, "c-shoes", day)[0] >= 1, "precondition: the ad was capped-counted"
        receipt = privacy_pb2_grpc.PrivacyAdminServiceStub(channel).EraseUser(
            privacy_pb2.EraseUserRequest(user_id="app-user-x"), metadata=admin_md, timeout=30)
        assert rec.caps.counts(user_key, "c-shoes", day) == (0, 0), (
            "EraseUser did not clear the server's frequency counts: privacy.erase_user erases the shared store "
            "(serving.frequency_store sqlite/redis); an in-process one needs app_services' eraser. Receipt stores: "
            + ", ".join(st.store for st in receipt.stores))
    keys.close()
