"""Unit fixtures for campaigns: a valid campaign document factory, rules, a SQLite store in tmp."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest


def _campaign_doc(cid: str = "c1", advertiser_id: str = "acme", **over) -> dict:
    doc = {
        "id": cid, "advertiser_id": advertiser_id, "name": f"Campaign {cid}", "objective": "traffic",
        "status": "active",
        "schedule": {"start": datetime.now(timezone.utc) - timedelta(days=1),
                     "end": datetime.now(timezone.utc) + timedelta(days=30)},
        "budget": {"daily": 100.0, "lifetime": 2000.0, "currency": "EUR"},
        "bid": {"strategy": "CPC", "amount": 0.8},
        "targeting": {"categories": ["sports/running_shoes"], "regions": ["DE"], "devices": ["glasses"]},
        "frequency_cap": {"per_day": 3, "per_week": 10},
        "creatives": [{"id": f"{cid}-cr1", "headline": "Run faster", "landing_url": "https://shop.example/run"}],
    }
    doc.update(over)
    return doc


@pytest.fixture
def campaign_doc():
    """``campaign_doc(cid, advertiser_id, **overrides)`` → a valid active campaign dict."""
    return _campaign_doc


@pytest.fixture
def rules():
    from campaigns import Rules, Taxonomy

    return Rules(taxonomy=Taxonomy(), max_bid=50.0)


@pytest.fixture
def sqlite_store(tmp_path: Path):
    from campaigns import Advertiser, CampaignStore

    store = CampaignStore.open(f"sqlite:///{tmp_path / 'campaigns.db'}", max_bid=50.0)
    store.create_advertiser(Advertiser(id="acme", name="ACME Sports", currency="EUR"), actor="setup")
    yield store
    store.close()
