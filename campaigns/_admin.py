"""``CampaignAdminServicer``: the gRPC face of the store (``sightline.v1.CampaignAdminService``).

Authentication and scopes are the server's job (serving's auth interceptor requires
``admin:campaigns`` for every method); this servicer adds *marketer scoping*: a caller
whose key owner reads ``advertiser:<id>`` (or ``advertiser:<id>:<person>``) may only see
and change that advertiser's campaigns. Errors are raised as ``campaigns.errors``
exceptions; serving's error interceptor maps their ``code`` to the gRPC status.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

from campaigns._model import Advertiser, Campaign, Creative, Product
from campaigns._report import report_from_log
from campaigns.errors import PermissionDenied, ValidationError

SERVICE_NAME = "sightline.v1.CampaignAdminService"
SCOPE = "admin:campaigns"


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``actor`` for the audit log; ``advertiser_id`` restricts them to one advertiser."""

    actor: str
    advertiser_id: str | None = None

    @classmethod
    def from_owner(cls, owner: str) -> "Principal":
        """``advertiser:acme[:alice]`` → restricted to ``acme``; anything else → unrestricted."""
        if owner.startswith("advertiser:"):
            parts = owner.split(":")
            if len(parts) >= 2 and parts[1]:
                return cls(actor=owner, advertiser_id=parts[1])
        return cls(actor=owner)


def _ms(dt: datetime | None) -> int:
    return int(dt.timestamp() * 1000) if dt else 0


def _from_ms(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None


def campaign_to_pb(c: Campaign, pb):
    """``Campaign`` → ``admin_pb2.CampaignSpec``."""
    s = c.schedule
    return pb.CampaignSpec(
        id=c.id, advertiser_id=c.advertiser_id, name=c.name, objective=c.objective, status=c.status,
        schedule=pb.CampaignSchedule(
            start_time_ms=_ms(s.start), end_time_ms=_ms(s.end),
            dayparting=[pb.DaypartWindow(weekdays=list(w.weekdays), start_hour=w.start_hour, end_hour=w.end_hour)
                        for w in s.dayparting]),
        budget=pb.CampaignBudget(daily=c.budget.daily or 0.0, lifetime=c.budget.lifetime or 0.0,
                                 currency=c.budget.currency),
        bid=pb.BidStrategy(strategy=c.bid.strategy, amount=c.bid.amount),
        targeting=pb.CampaignTargeting(**{k: list(v) for k, v in c.targeting.model_dump().items()}),
        frequency_cap=pb.FrequencyCap(per_day=c.frequency_cap.per_day or 0, per_week=c.frequency_cap.per_week or 0,
                                      skip_uncounted=c.frequency_cap.skip_uncounted),
        excluded_categories=list(c.excluded_categories),
        creatives=[creative_to_pb(cr, pb) for cr in c.creatives],
        version=c.version, updated_time_ms=_ms(c.updated_at),
    )


def creative_to_pb(cr: Creative, pb):
    return pb.CreativeSpec(id=cr.id, headline=cr.headline, body=cr.body, image_url=cr.image_url,
                           landing_url=cr.landing_url, call_to_action=cr.call_to_action,
                           product_sku=cr.product_sku or "", status=cr.status)


def creative_doc(m) -> dict:
    doc = {"id": m.id, "headline": m.headline, "body": m.body, "image_url": m.image_url,
           "landing_url": m.landing_url, "product_sku": m.product_sku or None, "status": m.status or "active"}
    if m.call_to_action:
        doc["call_to_action"] = m.call_to_action
    return doc


def campaign_doc(m) -> dict:
    """``admin_pb2.CampaignSpec`` → the plain dict ``Campaign.from_doc`` takes (0 / "" mean unset)."""
    if not m.HasField("schedule") or not m.schedule.start_time_ms:
        raise ValidationError([("schedule.start_time_ms", "is required; set the campaign start (UTC epoch ms)")],
                              entity=f"campaign {m.id!r}")
    if not m.HasField("bid"):
        raise ValidationError([("bid", "is required; set bid.strategy (CPC or CPM) and bid.amount")],
                              entity=f"campaign {m.id!r}")
    t = m.targeting
    return {
        "id": m.id, "advertiser_id": m.advertiser_id, "name": m.name, "objective": m.objective or "traffic",
        "status": m.status or "draft",
        "schedule": {"start": _from_ms(m.schedule.start_time_ms), "end": _from_ms(m.schedule.end_time_ms),
                     "dayparting": [{"weekdays": list(w.weekdays) or list(range(7)), "start_hour": w.start_hour,
                                     "end_hour": w.end_hour} for w in m.schedule.dayparting]},
        "budget": {"daily": m.budget.daily or None, "lifetime": m.budget.lifetime or None,
                   "currency": m.budget.currency or "EUR"},
        "bid": {"strategy": m.bid.strategy or "CPC", "amount": m.bid.amount},
        "targeting": {"scenes": list(t.scenes), "objects": list(t.objects), "keywords": list(t.keywords),
                      "categories": list(t.categories), "location_categories": list(t.location_categories),
                      "regions": list(t.regions), "devices": list(t.devices)},
        "frequency_cap": {"per_day": m.frequency_cap.per_day or None, "per_week": m.frequency_cap.per_week or None,
                          "skip_uncounted": m.frequency_cap.skip_uncounted},
        "excluded_categories": list(m.excluded_categories),
        "creatives": [creative_doc(cr) for cr in m.creatives],
    }


def _product_to_pb(p: Product, pb):
    return pb.ProductSpec(sku=p.sku, title=p.title, brand=p.brand, category=p.category, price=p.price,
                          currency=p.currency, availability=p.availability, landing_url=p.landing_url,
                          quality=p.quality or 0.0, advertiser_id=p.advertiser_id or "")


def _nan(v) -> float:
    return float("nan") if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError([(field, f"{text!r} is not a date; use YYYY-MM-DD")], entity="request") from None


def _default_principal(context) -> Principal:
    """Without an injected resolver: the ``x-sightline-actor`` metadata, else ``admin-api``."""
    for key, value in (context.invocation_metadata() or ()):
        if key == "x-sightline-actor" and value:
            return Principal(actor=value)
    return Principal(actor="admin-api")


@functools.cache
def servicer_class():
    """The servicer class, built on the generated base (imported lazily: protobuf code is generated)."""
    from proto import admin_pb2 as pb
    from proto import admin_pb2_grpc as pbg

    class CampaignAdminServicer(pbg.CampaignAdminServiceServicer):
        """Admin API over a ``CampaignStore``; ``data_dir`` holds the feedback event log for stats.

        ``principal`` maps the gRPC context to a ``Principal``; wire it to the auth layer, e.g.
        ``lambda ctx: Principal.from_owner(serving.current_caller().owner)``.
        """

        def __init__(self, store, *, data_dir: Path | None = None,
                     principal: Callable[[object], Principal] | None = None) -> None:
            self.store = store
            self.data_dir = Path(data_dir) if data_dir is not None else None
            self._principal = principal or _default_principal

        # --- scoping helpers ---
        def _who(self, context) -> Principal:
            return self._principal(context)

        def _guard_advertiser(self, who: Principal, advertiser_id: str) -> None:
            if who.advertiser_id is not None and advertiser_id != who.advertiser_id:
                raise PermissionDenied(f"this API key may only manage advertiser {who.advertiser_id!r}, not "
                                       f"{advertiser_id!r}; use a key issued for that advertiser")

        def _campaign(self, who: Principal, campaign_id: str) -> Campaign:
            c = self.store.get_campaign(campaign_id)
            self._guard_advertiser(who, c.advertiser_id)
            return c

        # --- advertisers ---
        def CreateAdvertiser(self, request, context):
            who = self._who(context)
            if who.advertiser_id is not None:
                raise PermissionDenied("advertiser-scoped API keys cannot create advertisers; ask a platform admin")
            adv = Advertiser.from_doc({"id": request.id, "name": request.name, "currency": request.currency or "EUR"})
            adv = self.store.create_advertiser(adv, actor=who.actor)
            return pb.Advertiser(id=adv.id, name=adv.name, currency=adv.currency)

        def GetAdvertiser(self, request, context):
            who = self._who(context)
            self._guard_advertiser(who, request.id)
            adv = self.store.get_advertiser(request.id)
            return pb.Advertiser(id=adv.id, name=adv.name, currency=adv.currency)

        def ListAdvertisers(self, request, context):
            who = self._who(context)
            advs = [a for a in self.store.list_advertisers() if who.advertiser_id in (None, a.id)]
            return pb.ListAdvertisersResponse(advertisers=[pb.Advertiser(id=a.id, name=a.name, currency=a.currency)
                                                           for a in advs])

        # --- campaigns ---
        def CreateCampaign(self, request, context):
            who = self._who(context)
            self._guard_advertiser(who, request.advertiser_id)
            c = Campaign.from_doc(campaign_doc(request), where=repr(request.id))
            return campaign_to_pb(self.store.create_campaign(c, actor=who.actor), pb)

        def GetCampaign(self, request, context):
            return campaign_to_pb(self._campaign(self._who(context), request.id), pb)

        def UpdateCampaign(self, request, context):
            who = self._who(context)
            current = self._campaign(who, request.campaign.id)
            self._guard_advertiser(who, request.campaign.advertiser_id)
            doc = campaign_doc(request.campaign)
            changes = {k: v for k, v in doc.items() if k != "id"}
            updated = self.store.update_campaign(current.id, changes, actor=who.actor,
                                                 expected_version=request.expected_version or None)
            return campaign_to_pb(updated, pb)

        def SetCampaignStatus(self, request, context):
            who = self._who(context)
            self._campaign(who, request.id)
            return campaign_to_pb(self.store.set_status(request.id, request.status, actor=who.actor), pb)

        def ListCampaigns(self, request, context):
            who = self._who(context)
            if request.advertiser_id:
                self._guard_advertiser(who, request.advertiser_id)
            size = request.page_size or 100
            if not 0 < size <= 1000:
                raise ValidationError([("page_size", f"{size} is out of range; use 1..1000")], entity="request")
            try:
                offset = int(request.page_token or 0)
            except ValueError:
                raise ValidationError([("page_token", "is not a token this server issued; pass next_page_token "
                                                      "back unchanged")], entity="request") from None
            found = self.store.list_campaigns(
                advertiser_id=who.advertiser_id or request.advertiser_id or None,
                status=list(request.statuses) or None, objective=request.objective or None,
                category=request.category or None, name_contains=request.name_contains or None,
                limit=size + 1, offset=offset)
            more = len(found) > size
            return pb.ListCampaignsResponse(campaigns=[campaign_to_pb(c, pb) for c in found[:size]],
                                            next_page_token=str(offset + size) if more else "")

        # --- creatives ---
        def AddCreative(self, request, context):
            who = self._who(context)
            self._campaign(who, request.campaign_id)
            cr = Creative.from_doc(creative_doc(request.creative), where=repr(request.creative.id))
            return campaign_to_pb(self.store.add_creative(request.campaign_id, cr, actor=who.actor), pb)

        def RemoveCreative(self, request, context):
            who = self._who(context)
            self._campaign(who, request.campaign_id)
            return campaign_to_pb(self.store.remove_creative(request.campaign_id, request.creative_id,
                                                             actor=who.actor), pb)

        # --- products ---
        def UpsertProducts(self, request, context):
            who = self._who(context)
            products = []
            for m in request.products:
                if who.advertiser_id is not None and m.advertiser_id != who.advertiser_id:
                    raise PermissionDenied(f"product {m.sku!r}: this key may only upsert products with advertiser_id "
                                           f"{who.advertiser_id!r}")
                products.append(Product.from_doc({
                    "sku": m.sku, "title": m.title, "brand": m.brand, "category": m.category, "price": m.price,
                    "currency": m.currency or "EUR", "availability": m.availability or "in_stock",
                    "landing_url": m.landing_url, "quality": m.quality or None,
                    "advertiser_id": m.advertiser_id or None}, where=repr(m.sku)))
            created, updated = self.store.upsert_products(products, actor=who.actor)
            return pb.UpsertProductsResponse(created=created, updated=updated)

        def GetProduct(self, request, context):
            return _product_to_pb(self.store.get_product(request.sku), pb)

        # --- stats and audit ---
        def GetDeliveryStats(self, request, context):
            who = self._who(context)
            if request.campaign_id:
                campaigns = [self._campaign(who, request.campaign_id)]
            else:
                if request.advertiser_id:
                    self._guard_advertiser(who, request.advertiser_id)
                campaigns = self.store.list_campaigns(advertiser_id=who.advertiser_id or request.advertiser_id or None)
            if self.data_dir is None:
                raise ValidationError("this server has no event log configured (data_dir); start it with settings")
            report = report_from_log(self.data_dir, campaigns, since=_day(request.since, "since"),
                                     until=_day(request.until, "until"))
            rows = [pb.CampaignDeliveryRow(
                campaign_id=r["campaign_id"], day=r["day"].isoformat(), impressions=r["impressions"],
                clicks=r["clicks"], conversions=r["conversions"], spend=r["spend"], ctr=_nan(r["ctr"]),
                cvr=_nan(r["cvr"]), cpc=_nan(r["cpc"]), cpa=_nan(r["cpa"]), planned_spend=_nan(r["planned_spend"]),
                budget_used=_nan(r["budget_used"]), pacing_status=r["pacing_status"]) for r in report.iter_rows(named=True)]
            return pb.GetDeliveryStatsResponse(rows=rows)

        def ListAuditLog(self, request, context):
            who = self._who(context)
            if who.advertiser_id is not None:
                if request.entity_type != "campaign" or not request.entity_id:
                    raise PermissionDenied("advertiser-scoped keys may read the audit log of one of their campaigns; "
                                           "set entity_type='campaign' and entity_id")
                self._campaign(who, request.entity_id)
            entries = self.store.audit_log(entity_type=request.entity_type or None, entity_id=request.entity_id or None,
                                           limit=request.limit or 100)
            return pb.ListCampaignAuditLogResponse(entries=[pb.CampaignAuditEntry(
                id=e.id, at_time_ms=_ms(e.at), actor=e.actor, action=e.action, entity_type=e.entity_type,
                entity_id=e.entity_id, before_json=json.dumps(e.before) if e.before is not None else "",
                after_json=json.dumps(e.after) if e.after is not None else "") for e in entries])

    CampaignAdminServicer.__qualname__ = "CampaignAdminServicer"
    return CampaignAdminServicer


def admin_service(store, *, data_dir: Path | None = None, principal: Callable[[object], Principal] | None = None,
                  servicer=None, on_stop: Callable[[], None] | None = None):
    """A ``serving.Service`` registering the admin API with scope ``admin:campaigns`` on every method.

    Wires ``Principal`` to serving's ``current_caller()`` unless ``principal`` is given.
    """
    import serving
    from proto import admin_pb2 as pb
    from proto import admin_pb2_grpc as pbg

    if principal is None:
        def principal(_context) -> Principal:
            caller = serving.current_caller()
            return Principal.from_owner(caller.owner) if caller is not None else Principal(actor="admin-api")

    servicer = servicer or servicer_class()(store, data_dir=data_dir, principal=principal)
    methods = pb.DESCRIPTOR.services_by_name["CampaignAdminService"].methods_by_name
    return serving.Service(name=SERVICE_NAME, add_to_server=pbg.add_CampaignAdminServiceServicer_to_server,
                           servicer=servicer, scopes={m: SCOPE for m in methods}, on_stop=on_stop)


def grpc_services(settings) -> list:
    """What ``serving`` registers for this package (``serving.admin_services`` looks this up):
    the admin API over the store at ``settings.campaign_db_url``, closed when the server stops."""
    from campaigns._store import CampaignStore

    store = CampaignStore.from_settings(settings)
    return [admin_service(store, data_dir=settings.data_dir, on_stop=store.close)]
