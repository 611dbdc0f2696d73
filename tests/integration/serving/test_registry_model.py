"""Recommend ranks with a model from the real registry (trained here, tiny) and reports its version."""

from __future__ import annotations

import pytest

from proto import events_pb2, serving_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_registered_production_model_ranks_and_is_reported(tmp_path, serving_kit):
    from models import Registry, train_and_register
    from models.testing import synthetic_impressions
    from sightline.settings import load_settings

    settings = load_settings(env={}, data_dir=tmp_path / "data", serving={"port": 0})
    serving_kit.seed_world(settings.campaign_db_url)
    record, _ = train_and_register("logreg", synthetic_impressions(2000, n_items=80), Registry(settings),
                                   alias="production", progress=False, work_dir=tmp_path / "work")
    running = serving_kit.start_server(settings, feature_store=False, use_experiments=False)
    try:
        reply = running.recommend(serving_pb2.RecommendRequest(
            app_id="app", user_id="u1", consent=events_pb2.Consent(context=True, personalization=True),
            context=events_pb2.Context(scene="park", objects=["running_shoe"], intent_text="running shoes"),
            surfaces=serving_pb2.Surfaces(ad_slots=3, suggestions=5)))
        assert reply.model_version == record.version
        assert reply.ads and all(0 < a.pctr < 1 for a in reply.ads) and reply.suggestions
        assert running.servicer.stats().get("ranker_failures", 0) == 0
    finally:
        serving_kit.stop_server(running)
