"""The closed-loop responder against a fake client (the real gRPC path is in integration)."""

import numpy as np
import pytest

from proto import events_pb2 as pb
from proto import serving_pb2 as spb
from simulation import SimulationConfigError, SimulationUnavailable, respond


class FakeServer:
    """Serves the first creatives/products of the request's intent category (or any)."""

    def __init__(self, world, unknown=False):
        self.world = world
        self.feedback = []
        self.unknown = unknown
        self.requests = []

    def recommend(self, request):
        self.requests.append(request)
        w = self.world
        n = len(self.requests)
        creatives = w.creatives["creative_id"].to_list()
        skus = w.products["product_sku"].to_list()
        ads = [spb.Ad(creative_id=creatives[(n * 7 + k) % len(creatives)], impression_token=f"a{n}-{k}", position=k)
               for k in range(request.surfaces.ad_slots)]
        sug = [spb.Suggestion(product_sku=skus[(n * 13 + k) % len(skus)], impression_token=f"s{n}-{k}", position=k)
               for k in range(request.surfaces.suggestions)]
        if self.unknown:
            ads.append(spb.Ad(creative_id="nope", impression_token="x", position=9))
        return spb.RecommendResponse(request_id=request.request_id, ads=ads, suggestions=sug, model_version="fake")

    def report(self, request):
        self.feedback.append(request)
        return spb.FeedbackResponse(event_id="e")


def test_feedback_follows_served_slates(small_world):
    server = FakeServer(small_world, unknown=True)
    result = respond(small_world, server, 300, seed=5, ad_slots=2, suggestions=3)
    assert result.requests + result.skipped_no_consent == 300 and result.failed_requests == 0
    assert 0 < result.skipped_no_consent < 60  # ~10% of users have no context consent: the app does not ask
    assert all(r.consent.context for r in server.requests)
    assert result.impressions == result.requests * 5 and result.unknown_items == result.requests
    types = [f.type for f in server.feedback]
    assert types.count(pb.IMPRESSION) == result.impressions
    assert types.count(pb.CLICK) == result.clicks
    assert types.count(pb.CONVERSION) == result.conversions
    assert all(f.conversion_value > 0 for f in server.feedback if f.type == pb.CONVERSION)
    # every reported token was served
    served = {f"a{n}-{k}" for n in range(1, 301) for k in range(2)} | {f"s{n}-{k}" for n in range(1, 301) for k in range(3)}
    assert {f.impression_token for f in server.feedback} <= served
    frame = result.frame
    assert frame.height == result.impressions
    assert frame["click"].sum() == result.clicks
    assert result.expected_clicks == pytest.approx(frame["p_click"].sum())
    # the requests carry the raw consented context
    assert all(r.context.scene for r in server.requests) and all(r.user_id for r in server.requests)


def test_same_seed_same_outcomes(small_world):
    a = respond(small_world, FakeServer(small_world), 100, seed=8)
    b = respond(small_world, FakeServer(small_world), 100, seed=8)
    assert a.frame.equals(b.frame)
    c = respond(small_world, FakeServer(small_world), 100, seed=9)
    assert not np.array_equal(a.frame["p_click"].to_numpy(), c.frame["p_click"].to_numpy())


class _Code:
    def __init__(self, name):
        self.name = name


class _RpcError(Exception):
    def __init__(self, name):
        self._name = name

    def code(self):
        return _Code(self._name)


class DownServer:
    target = "127.0.0.1:1"

    def __init__(self, code):
        self._code = code

    def recommend(self, request):
        raise _RpcError(self._code)

    def report(self, request):
        raise AssertionError("no feedback without a slate")


def test_server_down_or_key_refused_fail_with_the_fix(small_world):
    with pytest.raises(SimulationUnavailable, match="sightline serve"):
        respond(small_world, DownServer("UNAVAILABLE"), 5, seed=1)
    with pytest.raises(SimulationConfigError, match="api-key"):
        respond(small_world, DownServer("UNAUTHENTICATED"), 5, seed=1)
    with pytest.raises(SimulationConfigError):
        respond(small_world, FakeServer(small_world), 5, seed=1, ad_slots=11)
