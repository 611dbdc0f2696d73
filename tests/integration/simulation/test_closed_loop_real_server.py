"""The closed loop against the REAL RecommendationService: a small simulated world in the
campaign store, serving's recommendation_service (context-only ranking, events to the real
broker), the responder reporting feedback per the ground truth."""

import logging
from datetime import datetime, timezone

import numpy as np
import pytest

from simulation import (
    GrpcServingClient, WorldConfig, build_world, load_world, respond, sample_contexts, true_probabilities,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def live(kafka_settings):
    from campaigns import CampaignStore
    from serving import ApiKeyStore, build_server, recommendation_service

    settings = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(update={"port": 0})})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    world = build_world(WorldConfig(seed=21, n_users=800, n_products=3_000, n_advertisers=40, n_campaigns=150,
                                    n_creatives=400, start_date=datetime.now(timezone.utc).date()))
    store = CampaignStore.from_settings(settings)
    load_world(world, store)
    store.close()
    service = recommendation_service(settings, feature_store=False, use_experiments=False, seed=7)
    keys = ApiKeyStore.from_settings(settings)
    key = keys.create_key("simulator", ["recommend", "feedback"])
    server = build_server(settings, [service], keys, port=0).start()
    yield world, server, key
    server.stop(1)
    keys.close()


def test_closed_loop_with_the_real_server(live):
    world, server, key = live
    with GrpcServingClient(server.address, key, timeout_s=10) as client:
        result = respond(world, client, 150, seed=4, ad_slots=2, suggestions=3)
    summary = result.summary()
    assert result.failed_requests == 0, summary
    assert result.unknown_items == 0, summary        # everything served exists in the world
    assert result.feedback_errors == 0, summary      # every impression token was accepted
    assert result.impressions > 150, summary
    # the server's contextual slates beat random items of the same kinds on the same requests
    frame = result.frame
    ctx = sample_contexts(world, 150, 4)
    rng = np.random.default_rng(0)
    req = np.repeat(np.arange(len(ctx)), 5)
    random_items = rng.integers(0, len(world.items), len(req))
    p_random = true_probabilities(world, ctx, req, random_items, np.tile([0, 1, 0, 1, 2], len(ctx)))[0].mean()
    logging.getLogger(__name__).info("closed loop: %s; served mean true p_click %.4f vs random items %.4f",
                                     summary, frame["p_click"].mean(), p_random)
    assert frame["p_click"].mean() > p_random, (frame["p_click"].mean(), p_random)
