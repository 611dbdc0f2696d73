"""Serving's read side: a change made through one store connection (another process in
production) reaches a running SnapshotCache within 5 s, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from campaigns import Advertiser, Campaign, CampaignStore, Product, SnapshotCache, load_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(store, campaign_doc):
    store.bulk_load(
        advertisers=[Advertiser(id="acme", name="ACME")],
        campaigns=[Campaign.from_doc(campaign_doc(f"c{i}")) for i in range(3)]
        + [Campaign.from_doc(campaign_doc("draft1", status="draft"))],
        products=[Product(sku=f"s{i}", title="t", category="sports/running_shoes", price=10.0,
                          landing_url="https://shop.example/p", availability="out_of_stock" if i == 0 else "in_stock")
                  for i in range(5)],
        actor="seed")
    return store


def test_snapshot_contents(seeded):
    snap = load_snapshot(seeded)
    assert sorted(snap.campaigns) == ["c0", "c1", "c2"]            # drafts are not served
    assert snap.campaigns["c1"].bid.amount == 0.8 and snap.campaigns["c1"].frequency_cap.per_day == 3
    assert snap.creatives["c1-cr1"].campaign_id == "c1"
    assert len(snap.products) == 5
    assert [p.sku for p in snap.products_by_category["sports/running_shoes"]] == ["s1", "s2", "s3", "s4"]
    assert set(snap.campaigns_for_category("sports/running_shoes")) == {"c0", "c1", "c2"}
    assert snap.campaigns_for_category("electronics/tv") == ()
    assert len(snap.live(datetime.now(timezone.utc), 2, 10)) == 3
    with pytest.raises(TypeError):
        snap.campaigns["x"] = None                                   # immutable
    again = load_snapshot(seeded, previous=snap)
    assert again.products is snap.products                           # catalog reused when unchanged


def test_change_reaches_running_cache_within_5s(seeded, store_url, wait_until):
    writer = CampaignStore.open(store_url)                           # a second connection, like the CLI
    from sightline.settings import load_settings

    refresh_s = load_settings(env={}).serving.snapshot_refresh_s     # the serving default (2 s)
    cache = SnapshotCache(seeded, refresh_s=refresh_s).start()
    try:
        assert "c1" in cache.get().campaigns
        version = cache.get().version

        t0 = time.monotonic()
        writer.pause("c1", actor="marketer")
        took = wait_until(lambda: "c1" not in cache.get().campaigns, timeout=5.0)
        assert took < 5.0
        print(f"pause visible to the cache after {took:.2f} s (refresh_s={refresh_s})")

        writer.update_campaign("c2", {"budget.daily": 42.0, "targeting.categories": ["electronics"]}, actor="m")
        wait_until(lambda: cache.get().campaigns["c2"].budget.daily == 42.0, timeout=5.0)
        assert cache.get().campaigns_for_category("electronics/tv") == ("c2",)

        products_before = cache.get().products
        writer.upsert_products([Product(sku="new", title="n", category="sports/yoga", price=5.0,
                                        landing_url="https://shop.example/n")], actor="feed")
        wait_until(lambda: "new" in cache.get().products, timeout=5.0)
        assert cache.get().products is not products_before
        assert cache.get().version > version and cache.last_error is None
        assert time.monotonic() - t0 < 3 * 5.0
    finally:
        cache.stop()
        writer.close()


def test_cache_without_changes_does_not_reload(seeded):
    cache = SnapshotCache(seeded, refresh_s=0.2)
    first = cache.get()
    assert cache.refresh() is False and cache.get() is first
    with pytest.raises(ValueError, match="refresh_s"):
        SnapshotCache(seeded, refresh_s=0)
