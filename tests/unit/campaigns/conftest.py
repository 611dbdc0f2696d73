"""Unit fixtures for campaigns: rules and a SQLite store in tmp (``campaign_doc`` is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


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
