"""Campaigns: the marketer's domain and its SQL store, plus serving's read side.

Store (SQLAlchemy 2; SQLite by default, PostgreSQL by URL; Alembic migrations run on open)::

    from campaigns import CampaignStore, Advertiser, Campaign, Creative, Product
    store = CampaignStore.open(settings.campaign_db_url, max_bid=settings.campaigns.max_bid)
    # or CampaignStore.from_settings(settings)
    store.create_advertiser(Advertiser(id="acme", name="ACME", currency="EUR"), actor="alice")
    store.create_campaign(Campaign.from_doc({...}), actor="alice")   # validated, audited
    store.pause("c1", actor="alice"); store.update_campaign("c1", {"budget.daily": 80}, actor="alice")

Bulk seeding (the simulator)::

    store.bulk_load(advertisers=[...], campaigns=[...], products=[...], actor="simulator")

``Campaign(...)`` nests ``Schedule``, ``Budget``, ``Bid``, ``Targeting``, ``FrequencyCap``
and a tuple of ``Creative``; all models are frozen pydantic models (``to_doc``/``from_doc``
give the plain dict / YAML form). Every rule violation raises ``ValidationError``
(``code = "INVALID_ARGUMENT"``) listing each field and its fix.

Serving's read side::

    cache = SnapshotCache(store, refresh_s=settings.serving.snapshot_refresh_s).start()
    snap = cache.get()                 # CampaignSnapshot: immutable, lock-free
    snap.campaigns["c1"].bid.amount; snap.products["sku-1"].price
    snap.live(now, local_weekday, local_hour); snap.campaigns_for_category("sports/running_shoes")

A change in the store bumps a version counter; the cache polls it every ``refresh_s``
and swaps in a new snapshot, so pauses/budget/targeting changes reach serving in seconds.

Also: ``CampaignAdminServicer`` (gRPC ``sightline.v1.CampaignAdminService``),
``delivery_report`` (polars, from the feedback event log), YAML ``apply_import`` /
``export_document``, the ``Taxonomy`` and the closed vocabularies in ``campaigns.vocab``.
"""

from campaigns._admin import Principal, admin_service, grpc_services
from campaigns._model import (
    AVAILABILITIES, BID_STRATEGIES, OBJECTIVES, STATUSES,
    Advertiser, AuditEntry, Bid, Budget, Campaign, Creative, DaypartWindow, FrequencyCap, Product, Schedule, Targeting,
)
from campaigns._report import REPORT_COLUMNS, delivery_report, pacing_status, plot_spend, report_from_log, totals
from campaigns._snapshot import CampaignSnapshot, SnapshotCache, load_snapshot
from campaigns._store import RETIRED_WRITER, CampaignStore, PacingLevels, PacingTotals
from campaigns._validation import Rules, advertiser_problems, campaign_problems, creative_problems, product_problems
from campaigns._yaml import ImportPlan, apply_import, dump_yaml, export_document, load_yaml, plan_import
from campaigns.errors import AlreadyExists, CampaignError, NotFound, PermissionDenied, StoreUnavailable, ValidationError
from campaigns.taxonomy import SENSITIVE_TOPS, Category, Taxonomy

__all__ = [
    "CampaignAdminServicer", "Principal", "admin_service", "grpc_services",
    "REPORT_COLUMNS", "delivery_report", "pacing_status", "plot_spend", "report_from_log", "totals",
    "AVAILABILITIES", "BID_STRATEGIES", "OBJECTIVES", "STATUSES",
    "Advertiser", "AuditEntry", "Bid", "Budget", "Campaign", "Creative", "DaypartWindow", "FrequencyCap", "Product",
    "Schedule", "Targeting",
    "ImportPlan", "apply_import", "dump_yaml", "export_document", "load_yaml", "plan_import",
    "CampaignSnapshot", "SnapshotCache", "load_snapshot", "CampaignStore", "PacingLevels", "PacingTotals", "RETIRED_WRITER",
    "Rules", "advertiser_problems", "campaign_problems", "creative_problems", "product_problems",
    "AlreadyExists", "CampaignError", "NotFound", "PermissionDenied", "StoreUnavailable", "ValidationError",
    "SENSITIVE_TOPS", "Category", "Taxonomy",
]


def __getattr__(name: str):
    # The servicer subclasses generated gRPC code; build it only when asked for, so that
    # importing campaigns (CLI, simulator) does not import grpc.
    if name == "CampaignAdminServicer":
        from campaigns._admin import servicer_class

        return servicer_class()
    raise AttributeError(f"module 'campaigns' has no attribute {name!r}")
