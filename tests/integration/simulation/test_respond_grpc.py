"""The closed loop over real gRPC on 127.0.0.1: API key in x-api-key, slates in, feedback out.

The server is serving's real ``build_server`` (auth, error mapping, health) with a small
stand-in RecommendationService that serves catalog items of the intent's category, so
the responder is tested independently of the ranking code.
"""

import threading

import pytest

from proto import events_pb2 as pb
from proto import serving_pb2, serving_pb2_grpc
from serving import ApiKeyStore, Service, build_server
from simulation import GrpcServingClient, SimulationConfigError, respond

pytestmark = pytest.mark.integration


class _StandIn(serving_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, world):
        self.world = world
        self.lock = threading.Lock()
        self.feedback = []
        self.tokens = {}
        creatives = world.creatives
        self.ads_by_cat = {}
        for cid, cat in zip(creatives["creative_id"], creatives["category"]):
            self.ads_by_cat.setdefault(cat, []).append(cid)
        self.products_by_cat = {}
        for sku, cat in zip(world.products["product_sku"], world.products["category"]):
            self.products_by_cat.setdefault(cat, []).append(sku)
        self.labels = {world.taxonomy.get(c).label: c for c in world.categories}

    def Recommend(self, request, context):  # noqa: N802
        text = request.context.intent_text
        cat = next((c for label, c in self.labels.items() if label in text), self.world.categories[0])
        ads = self.ads_by_cat.get(cat) or list(self.ads_by_cat.values())[0]
        skus = self.products_by_cat.get(cat) or list(self.products_by_cat.values())[0]
        reply = serving_pb2.RecommendResponse(request_id=request.request_id, model_version="stand-in")
        with self.lock:
            for k, cid in enumerate(ads[:request.surfaces.ad_slots]):
                token = f"{request.request_id}/a{k}"
                self.tokens[token] = cid
                reply.ads.append(serving_pb2.Ad(creative_id=cid, impression_token=token, position=k))
            for k, sku in enumerate(skus[:request.surfaces.suggestions]):
                token = f"{request.request_id}/s{k}"
                self.tokens[token] = sku
                reply.suggestions.append(serving_pb2.Suggestion(product_sku=sku, impression_token=token, position=k))
        return reply

    def ReportFeedback(self, request, context):  # noqa: N802
        with self.lock:
            self.feedback.append((request.type, request.impression_token))
        return serving_pb2.FeedbackResponse(event_id=str(len(self.feedback)))


@pytest.fixture
def server(make_settings, small_world):
    settings = make_settings(serving={"port": 0})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys = ApiKeyStore.from_settings(settings)
    key = keys.create_key("simulator", ["recommend", "feedback"])
    servicer = _StandIn(small_world)
    service = Service("sightline.v1.RecommendationService",
                      serving_pb2_grpc.add_RecommendationServiceServicer_to_server, servicer,
                      {"Recommend": "recommend", "ReportFeedback": "feedback"})
    srv = build_server(settings, [service], keys).start()
    yield srv, key, servicer
    srv.stop(0)
    keys.close()


def test_closed_loop_reports_feedback_for_served_items(server, small_world):
    srv, key, servicer = server
    with GrpcServingClient(srv.address, key) as client:
        result = respond(small_world, client, 200, seed=3, ad_slots=2, suggestions=3)
    assert result.failed_requests == 0 and result.feedback_errors == 0 and result.unknown_items == 0
    assert result.impressions >= 200 * 4
    types = [t for t, _ in servicer.feedback]
    assert types.count(pb.IMPRESSION) == result.impressions
    assert types.count(pb.CLICK) == result.clicks > 0
    assert types.count(pb.CONVERSION) == result.conversions
    assert {tok for _, tok in servicer.feedback} <= set(servicer.tokens)
    # a contextual server beats the average logged CTR: the truth rewards intent matches
    assert result.expected_clicks / result.impressions > 0.03


def test_wrong_api_key_is_refused_with_the_fix(server, small_world):
    srv, _, _ = server
    with GrpcServingClient(srv.address, "slk_nope_nope") as client, pytest.raises(SimulationConfigError, match="api-key"):
        respond(small_world, client, 3, seed=1)
