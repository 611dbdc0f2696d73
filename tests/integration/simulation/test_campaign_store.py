"""Loading a small world into a real SQLite campaign store through the campaigns API."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from campaigns import AlreadyExists, CampaignStore, load_snapshot
from simulation import WorldConfig, build_world, campaign_window, load_world

pytestmark = pytest.mark.integration


def test_small_world_loads_and_is_servable(make_settings):
    today = datetime.now(timezone.utc).date()
    world = build_world(WorldConfig(seed=3, n_users=500, n_products=2_000, n_advertisers=20, n_campaigns=60,
                                    n_creatives=150, start_date=today))
    settings = make_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = CampaignStore.from_settings(settings)
    try:
        started = time.monotonic()
        counts = load_world(world, store)
        assert time.monotonic() - started < 20
        assert counts == {"advertisers": 20, "campaigns": 60, "creatives": 150, "products": 2_000}
        assert len(store.list_campaigns()) == 60
        product = store.get_product("sku000000")
        assert product.landing_url.startswith("https://") and product.category in world.categories
        campaign = store.get_campaign("cmp00000")
        assert campaign.status == "active" and campaign.creatives
        start, end = campaign_window(world)
        now = datetime.now(timezone.utc)
        assert start <= now + timedelta(days=1) and end > now
        assert campaign.in_flight(now)
        snapshot = load_snapshot(store)
        assert len(snapshot.campaigns) == 60
        with pytest.raises(AlreadyExists):
            load_world(world, store)
    finally:
        store.close()
