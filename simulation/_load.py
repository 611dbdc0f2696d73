"""Loading a world into the campaign store through the campaigns package's public API.

Everything goes through ``campaigns``' own models and ``CampaignStore.bulk_load``, so
the simulated campaigns pass the same validation as a marketer's: https URLs,
budgets above the bid, non-sensitive category targeting, known currencies.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from simulation._world import World

log = logging.getLogger(__name__)


def world_to_campaign_models(world: World) -> tuple[list, list, list]:
    """(advertisers, campaigns with their creatives, products) as ``campaigns`` models."""
    from campaigns import Advertiser, Bid, Budget, Campaign, Creative, FrequencyCap, Product, Schedule, Targeting

    currency = world.config.currency
    advertisers = [Advertiser(id=r["advertiser_id"], name=r["name"], currency=currency)
                   for r in world.advertisers.iter_rows(named=True)]
    creatives_by_campaign: dict[str, list] = {}
    for r in world.creatives.iter_rows(named=True):
        creatives_by_campaign.setdefault(r["campaign_id"], []).append(Creative(
            id=r["creative_id"], campaign_id=r["campaign_id"], headline=r["headline"][:90], body=r["body"],
            image_url=r["image_url"], landing_url=r["landing_url"], call_to_action=r["call_to_action"],
            product_sku=r["product_sku"],
        ))
    campaigns = []
    for r in world.campaigns.iter_rows(named=True):
        campaigns.append(Campaign(
            id=r["campaign_id"], advertiser_id=r["advertiser_id"], name=r["name"], objective=r["objective"],
            status="active",
            schedule=Schedule(start=r["start_time"], end=r["end_time"]),
            budget=Budget(daily=float(r["daily_budget"]), lifetime=float(r["total_budget"]), currency=currency),
            bid=Bid(strategy=r["pricing"].upper(), amount=float(r["bid"])),
            targeting=Targeting(categories=tuple(r["categories"])),
            frequency_cap=FrequencyCap(per_day=int(r["frequency_cap_per_day"])),
            creatives=tuple(creatives_by_campaign.get(r["campaign_id"], ())),
        ))
    products = [
        Product(sku=r["product_sku"], title=r["title"], brand=r["brand"], category=r["category"], price=float(r["price"]),
                currency=currency, landing_url=r["landing_url"], quality=float(r["rating"]),
                advertiser_id=r["advertiser_id"])
        for r in world.products.iter_rows(named=True)
    ]
    return advertisers, campaigns, products


def load_world(world: World, store, *, actor: str = "simulator") -> dict[str, int]:
    """Insert the whole world into an empty ``campaigns.CampaignStore``; returns the counts.

    Raises ``campaigns.AlreadyExists`` when the store already holds the world's ids
    (load into a fresh database, or use ``sightline simulate world --db`` with a new file).
    """
    advertisers, campaigns, products = world_to_campaign_models(world)
    counts = store.bulk_load(advertisers=advertisers, campaigns=campaigns, products=products, actor=actor)
    log.info("loaded world into the campaign store: %s", counts)
    return counts


def campaign_window(world: World) -> tuple:
    """(latest start, earliest end): the window in which every campaign of the world is scheduled,
    so traffic timed inside it can be served by any of them."""
    start = world.campaigns["start_time"].max()
    end = world.campaigns["end_time"].min()
    return start, end - timedelta(seconds=1)
