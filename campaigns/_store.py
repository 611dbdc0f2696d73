"""The campaign store: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL.

Every write runs in one transaction that (1) validates the new state with the pure
rules of ``_validation``, (2) writes it, (3) appends an audit entry with the state
before and after, and (4) bumps the ``store_versions`` counter that snapshot readers poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns import _schema as T
from campaigns._model import Advertiser, AuditEntry, Campaign, Creative, Product, utc
from campaigns._validation import (
    Rules, check, check_advertiser, check_campaign, check_product, check_transition, creative_problems,
)
from campaigns.errors import AlreadyExists, NotFound, StoreUnavailable, ValidationError
from campaigns.taxonomy import Taxonomy

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "_migrations"

# Alembic's ``context``/``op`` are process-global proxies, so two threads must not run
# migrations at once (they would tear down each other's environment). Across processes
# the database itself arbitrates and ``_migrate`` retries.
_MIGRATE_LOCK = threading.Lock()


class PacingLevels(NamedTuple):
    """One server process's pacing levels for one campaign and day (``CampaignStore.put_pacing``)."""

    issued: float
    """Cost the process committed by serving today: CPM charges plus CPC expected costs."""
    outstanding: float
    """Expected cost of its CPC impressions still inside the click window."""
    outstanding_var: float
    """Variance of that cost."""
    rate: float | None
    """Its estimate of the campaign's unthrottled spend rate (money per second), if it has one."""
    seen_s: float
    """When it wrote these (its clock, epoch seconds)."""


RETIRED_WRITER = "~retired"
"""The writer under which ``CampaignStore.retire_pacing`` keeps stopped processes' levels."""


class PacingTotals(NamedTuple):
    """The other writers' pacing levels of one campaign and day, summed by the store
    (``CampaignStore.pacing_totals``): what a process's book needs of them."""

    issued: float
    """Cost they committed today, every writer's (a stopped one's too)."""
    outstanding: float
    """Expected cost of their CPC impressions still waiting for clicks: only writers that wrote
    within the click window (a writer stopped for longer has no click left to come)."""
    outstanding_var: float
    """Variance of that cost, of the same writers."""
    rate: float | None
    """The spend-rate estimate of the writer that wrote last, if any has one."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent, run on every open)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    for attempt in range(3):
        try:
            with _MIGRATE_LOCK, engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
            # Two processes opening a fresh database at once (serving + simulator): the
            # loser's CREATE TABLE fails; its retry finds the schema at head and does nothing.
            if attempt == 2 or "exist" not in str(exc).lower() and "locked" not in str(exc).lower() \
                    and "duplicate" not in str(exc).lower() and "unique" not in str(exc).lower():
                raise
            log.info("campaign store migration raced with another process; retrying (%s)", exc.orig)
            time.sleep(0.2 * (attempt + 1))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")       # readers (snapshot thread) never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# --- row <-> model ---------------------------------------------------------------------

def _campaign_row(c: Campaign, now: datetime, created: datetime | None, version: int) -> dict[str, Any]:
    return {
        "id": c.id, "advertiser_id": c.advertiser_id, "name": c.name, "objective": c.objective,
        "status": c.status, "start_at": c.schedule.start, "end_at": c.schedule.end,
        "dayparting": [w.model_dump(mode="json") for w in c.schedule.dayparting],
        "daily_budget": c.budget.daily, "lifetime_budget": c.budget.lifetime, "currency": c.budget.currency,
        "bid_strategy": c.bid.strategy, "bid_amount": c.bid.amount,
        "targeting": c.targeting.model_dump(mode="json"),
        "freq_cap_day": c.frequency_cap.per_day, "freq_cap_week": c.frequency_cap.per_week,
        "freq_cap_skip_uncounted": c.frequency_cap.skip_uncounted,
        "excluded_categories": list(c.excluded_categories),
        "created_at": created or now, "updated_at": now, "version": version,
    }


def _creative_rows(c: Campaign, now: datetime) -> list[dict[str, Any]]:
    return [{
        "id": cr.id, "campaign_id": c.id, "headline": cr.headline, "body": cr.body, "image_url": cr.image_url,
        "landing_url": cr.landing_url, "call_to_action": cr.call_to_action, "product_sku": cr.product_sku,
        "status": cr.status, "position": i, "updated_at": now,
    } for i, cr in enumerate(c.creatives)]


def _product_row(p: Product, now: datetime) -> dict[str, Any]:
    row = p.model_dump(exclude={"updated_at"})
    row["updated_at"] = now
    return row


def _creative_from(row: Mapping) -> Creative:
    return Creative.model_construct(
        id=row["id"], campaign_id=row["campaign_id"], headline=row["headline"], body=row["body"],
        image_url=row["image_url"], landing_url=row["landing_url"], call_to_action=row["call_to_action"],
        product_sku=row["product_sku"], status=row["status"], updated_at=utc(row["updated_at"]),
    )


def _campaign_from(row: Mapping, creatives: Sequence[Creative]) -> Campaign:
    return Campaign.model_validate({
        "id": row["id"], "advertiser_id": row["advertiser_id"], "name": row["name"],
        "objective": row["objective"], "status": row["status"],
        "schedule": {"start": utc(row["start_at"]), "end": row["end_at"] and utc(row["end_at"]),
                     "dayparting": row["dayparting"]},
        "budget": {"daily": row["daily_budget"], "lifetime": row["lifetime_budget"], "currency": row["currency"]},
        "bid": {"strategy": row["bid_strategy"], "amount": row["bid_amount"]},
        "targeting": row["targeting"],
        "frequency_cap": {"per_day": row["freq_cap_day"], "per_week": row["freq_cap_week"],
                          "skip_uncounted": bool(row["freq_cap_skip_uncounted"])},
        "excluded_categories": row["excluded_categories"], "creatives": tuple(creatives),
        "created_at": utc(row["created_at"]), "updated_at": utc(row["updated_at"]), "version": row["version"],
    })


def _product_from(row: Mapping) -> Product:
    return Product.model_construct(
        sku=row["sku"], title=row["title"], brand=row["brand"], category=row["category"], price=row["price"],
        currency=row["currency"], availability=row["availability"], landing_url=row["landing_url"],
        quality=row["quality"], advertiser_id=row["advertiser_id"], updated_at=utc(row["updated_at"]),
    )


def _advertiser_from(row: Mapping) -> Advertiser:
    return Advertiser(id=row["id"], name=row["name"], currency=row["currency"],
                      created_at=utc(row["created_at"]), updated_at=utc(row["updated_at"]))


def _bump(conn: Connection, name: str) -> None:
    conn.execute(sa.update(T.store_versions).where(T.store_versions.c.name == name)
                 .values(version=T.store_versions.c.version + 1))


def _audit(conn: Connection, actor: str, action: str, entity_type: str, entity_id: str,
           before: dict | None, after: dict | None, at: datetime) -> None:
    conn.execute(sa.insert(T.audit_log).values(at=at, actor=actor, action=action, entity_type=entity_type,
                                                entity_id=entity_id, before=before, after=after))


class CampaignStore:
    """Advertisers, campaigns (with creatives), products and the audit log in one SQL database.

    Open with ``CampaignStore.open(url)`` (migrates to the newest schema) or
    ``CampaignStore.from_settings(settings)``. Thread-safe: every method takes its own
    connection from the engine's pool. Writes take ``actor`` (who, for the audit log).
    """

    def __init__(self, engine: Engine, rules: Rules) -> None:
        self._engine = engine
        self.rules = rules

    # --- lifecycle -------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, taxonomy: Taxonomy | None = None, max_bid: float = 50.0,
             migrate: bool = True, echo: bool = False) -> "CampaignStore":
        """Connect to ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``) and migrate."""
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        try:
            engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            if migrate:
                _migrate(engine)
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(f"cannot open the campaign store at {engine.url.render_as_string(hide_password=True)}: "
                                   f"{exc.orig}; check settings campaigns.url (SIGHTLINE_CAMPAIGNS_URL) and that the "
                                   "database server is running") from None
        return cls(engine, Rules(taxonomy=taxonomy or Taxonomy(), max_bid=max_bid))

    @classmethod
    def from_settings(cls, settings) -> "CampaignStore":
        """The store at ``settings.campaign_db_url`` with ``settings.campaigns.max_bid``."""
        return cls.open(settings.campaign_db_url, max_bid=settings.campaigns.max_bid)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    # --- change detection ------------------------------------------------------------
    def versions(self) -> tuple[int, int]:
        """``(campaigns_version, products_version)``: counters bumped by every change (cheap)."""
        with self._engine.connect() as conn:
            rows = dict(conn.execute(sa.select(T.store_versions.c.name, T.store_versions.c.version)).all())
        return rows.get("campaigns", 0), rows.get("products", 0)

    # --- advertisers -----------------------------------------------------------------
    def create_advertiser(self, adv: Advertiser, *, actor: str) -> Advertiser:
        check_advertiser(adv)
        now = _now()
        with self._engine.begin() as conn:
            if conn.execute(sa.select(T.advertisers.c.id).where(T.advertisers.c.id == adv.id)).first():
                raise AlreadyExists(f"advertiser {adv.id!r} exists; update it or pick another id")
            conn.execute(sa.insert(T.advertisers).values(id=adv.id, name=adv.name, currency=adv.currency,
                                                         created_at=now, updated_at=now))
            _audit(conn, actor, "create", "advertiser", adv.id, None, adv.to_doc(), now)
            _bump(conn, "campaigns")
        return self.get_advertiser(adv.id)

    def upsert_advertiser(self, adv: Advertiser, *, actor: str) -> tuple[Advertiser, bool]:
        """Create or replace; returns ``(advertiser, changed)`` (no write when identical)."""
        check_advertiser(adv)
        now = _now()
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(T.advertisers).where(T.advertisers.c.id == adv.id)).mappings().first()
            if row is None:
                conn.execute(sa.insert(T.advertisers).values(id=adv.id, name=adv.name, currency=adv.currency,
                                                             created_at=now, updated_at=now))
                _audit(conn, actor, "create", "advertiser", adv.id, None, adv.to_doc(), now)
            else:
                before = _advertiser_from(row)
                if before.to_doc() == adv.to_doc():
                    return before, False
                conn.execute(sa.update(T.advertisers).where(T.advertisers.c.id == adv.id)
                             .values(name=adv.name, currency=adv.currency, updated_at=now))
                _audit(conn, actor, "update", "advertiser", adv.id, before.to_doc(), adv.to_doc(), now)
            _bump(conn, "campaigns")
        return self.get_advertiser(adv.id), True

    def get_advertiser(self, advertiser_id: str) -> Advertiser:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(T.advertisers).where(T.advertisers.c.id == advertiser_id)).mappings().first()
        if row is None:
            raise NotFound(f"advertiser {advertiser_id!r} does not exist; create it first "
                           "('sightline campaigns advertiser-add' or an advertisers: entry in the YAML)")
        return _advertiser_from(row)

    def list_advertisers(self) -> list[Advertiser]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(T.advertisers).order_by(T.advertisers.c.id)).mappings().all()
        return [_advertiser_from(r) for r in rows]

    # --- campaigns -------------------------------------------------------------------
    def _load_campaigns(self, conn: Connection, where=None, *, limit: int | None = None,
                        offset: int = 0) -> list[Campaign]:
        q = sa.select(T.campaigns).order_by(T.campaigns.c.id)
        if where is not None:
            q = q.where(where)
        if limit is not None:
            q = q.limit(limit).offset(offset)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        by_campaign: dict[str, list[Creative]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            for cr in conn.execute(sa.select(T.creatives).where(T.creatives.c.campaign_id.in_(part))
                                   .order_by(T.creatives.c.campaign_id, T.creatives.c.position)).mappings():
                by_campaign[cr["campaign_id"]].append(_creative_from(cr))
        return [_campaign_from(r, by_campaign[r["id"]]) for r in rows]

    def get_campaign(self, campaign_id: str) -> Campaign:
        with self._engine.connect() as conn:
            found = self._load_campaigns(conn, T.campaigns.c.id == campaign_id)
        if not found:
            raise NotFound(f"campaign {campaign_id!r} does not exist; list them with 'sightline campaigns list'")
        return found[0]

    def list_campaigns(self, *, advertiser_id: str | None = None, status: str | Iterable[str] | None = None,
                       objective: str | None = None, category: str | None = None, name_contains: str | None = None,
                       limit: int | None = None, offset: int = 0) -> list[Campaign]:
        """Campaigns ordered by id, filtered in SQL (``category``: targets that leaf or its top)."""
        conds = []
        if advertiser_id:
            conds.append(T.campaigns.c.advertiser_id == advertiser_id)
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            conds.append(T.campaigns.c.status.in_(statuses))
        if objective:
            conds.append(T.campaigns.c.objective == objective)
        if name_contains:
            conds.append(T.campaigns.c.name.ilike(f"%{name_contains}%"))
        where = sa.and_(*conds) if conds else None
        with self._engine.connect() as conn:
            if category is None:
                return self._load_campaigns(conn, where, limit=limit, offset=offset)
            found = self._load_campaigns(conn, where)
        top = category.split("/", 1)[0]
        found = [c for c in found if category in c.targeting.categories or top in c.targeting.categories]
        return found[offset:offset + limit] if limit is not None else found[offset:]

    def _write_campaign(self, conn: Connection, c: Campaign, *, actor: str, action: str,
                        before: Campaign | None, now: datetime) -> None:
        version = (before.version if before else 0) + 1
        row = _campaign_row(c, now, before.created_at if before else None, version)
        if before is None:
            conn.execute(sa.insert(T.campaigns).values(**row))
        else:
            conn.execute(sa.update(T.campaigns).where(T.campaigns.c.id == c.id).values(**row))
            conn.execute(sa.delete(T.creatives).where(T.creatives.c.campaign_id == c.id))
        rows = _creative_rows(c, now)
        if rows:
            taken = conn.execute(sa.select(T.creatives.c.id, T.creatives.c.campaign_id)
                                 .where(T.creatives.c.id.in_([r["id"] for r in rows]))).first()
            if taken:
                raise AlreadyExists(f"creative {taken[0]!r} belongs to campaign {taken[1]!r}; give it another id")
            conn.execute(sa.insert(T.creatives), rows)
        _audit(conn, actor, action, "campaign", c.id, before.to_doc() if before else None, c.to_doc(), now)
        _bump(conn, "campaigns")

    def _advertiser_in(self, conn: Connection, advertiser_id: str) -> Advertiser:
        row = conn.execute(sa.select(T.advertisers).where(T.advertisers.c.id == advertiser_id)).mappings().first()
        if row is None:
            raise ValidationError([("advertiser_id", f"advertiser {advertiser_id!r} does not exist; create it first "
                                                     "or fix advertiser_id")], entity="campaign")
        return _advertiser_from(row)

    def create_campaign(self, campaign: Campaign, *, actor: str) -> Campaign:
        """Insert a new campaign with its creatives; raises ``AlreadyExists`` for a taken id."""
        now = _now()
        with self._engine.begin() as conn:
            adv = self._advertiser_in(conn, campaign.advertiser_id)
            check_campaign(campaign, self.rules, now=now, advertiser=adv)
            if conn.execute(sa.select(T.campaigns.c.id).where(T.campaigns.c.id == campaign.id)).first():
                raise AlreadyExists(f"campaign {campaign.id!r} exists; use update or pick another id")
            self._write_campaign(conn, campaign, actor=actor, action="create", before=None, now=now)
        return self.get_campaign(campaign.id)

    def put_campaign(self, campaign: Campaign, *, actor: str) -> tuple[Campaign, bool]:
        """Create or replace a campaign (YAML import). Returns ``(campaign, changed)``; identical → no write."""
        now = _now()
        with self._engine.begin() as conn:
            found = self._load_campaigns(conn, T.campaigns.c.id == campaign.id)
            before = found[0] if found else None
            if before is not None and before.to_doc() == campaign.to_doc():
                return before, False
            adv = self._advertiser_in(conn, campaign.advertiser_id)
            if before is not None:
                check_transition(before, campaign.status)
            check_campaign(campaign, self.rules, now=now, advertiser=adv)
            self._write_campaign(conn, campaign, actor=actor, action="update" if before else "create",
                                 before=before, now=now)
        return self.get_campaign(campaign.id), True

    def update_campaign(self, campaign_id: str, changes: Mapping[str, Any], *, actor: str,
                        expected_version: int | None = None, action: str = "update") -> Campaign:
        """Apply ``changes`` — dotted paths to new values, e.g. ``{"budget.daily": 80, "status": "paused"}``
        (a top-level key replaces that whole part) — validate the result, and save it."""
        now = _now()
        with self._engine.begin() as conn:
            found = self._load_campaigns(conn, T.campaigns.c.id == campaign_id)
            if not found:
                raise NotFound(f"campaign {campaign_id!r} does not exist; list them with 'sightline campaigns list'")
            before = found[0]
            if expected_version is not None and expected_version != before.version:
                raise AlreadyExists(f"campaign {campaign_id!r} changed meanwhile (version {before.version}, you had "
                                    f"{expected_version}); reload it and apply your change again")
            doc = before.to_doc()
            for path, value in changes.items():
                if path in ("id", "version", "created_at", "updated_at"):
                    raise ValidationError([(path, "cannot be changed; create a new campaign instead")],
                                          entity=f"campaign {campaign_id!r}")
                _set_path(doc, path, value)
            after = Campaign.from_doc(doc, where=repr(campaign_id))
            if after.to_doc() == before.to_doc():
                return before
            check_transition(before, after.status)
            adv = self._advertiser_in(conn, after.advertiser_id)
            check_campaign(after, self.rules, now=now, advertiser=adv)
            self._write_campaign(conn, after, actor=actor, action=action, before=before, now=now)
        return self.get_campaign(campaign_id)

    def set_status(self, campaign_id: str, status: str, *, actor: str) -> Campaign:
        return self.update_campaign(campaign_id, {"status": status}, actor=actor, action=f"status:{status}")

    def pause(self, campaign_id: str, *, actor: str) -> Campaign:
        return self.set_status(campaign_id, "paused", actor=actor)

    def resume(self, campaign_id: str, *, actor: str) -> Campaign:
        return self.set_status(campaign_id, "active", actor=actor)

    def archive(self, campaign_id: str, *, actor: str) -> Campaign:
        return self.set_status(campaign_id, "archived", actor=actor)

    def end_expired(self, *, actor: str = "scheduler", now: datetime | None = None) -> list[str]:
        """Set status ``ended`` on active/paused campaigns whose schedule ended; returns their ids.

        Serving already stops a campaign at ``schedule.end`` (``Campaign.in_flight``); this
        keeps the stored status honest for listings and reports. Safe to run repeatedly.
        """
        now = utc(now or _now())
        with self._engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(T.campaigns.c.id).where(
                T.campaigns.c.status.in_(["active", "paused"]), T.campaigns.c.end_at.is_not(None),
                T.campaigns.c.end_at <= now))]
        for cid in ids:
            self.update_campaign(cid, {"status": "ended"}, actor=actor, action="status:ended")
        return ids

    # --- creatives -------------------------------------------------------------------
    def add_creative(self, campaign_id: str, creative: Creative, *, actor: str) -> Campaign:
        check(creative_problems(creative), f"creative {creative.id!r}")
        c = self.get_campaign(campaign_id)
        if any(cr.id == creative.id for cr in c.creatives):
            raise AlreadyExists(f"creative {creative.id!r} exists in campaign {campaign_id!r}; update it instead")
        creatives = [cr.model_dump() for cr in c.creatives] + [creative.model_dump()]
        return self.update_campaign(campaign_id, {"creatives": creatives}, actor=actor, expected_version=c.version,
                                    action="creative:add")

    def update_creative(self, campaign_id: str, creative_id: str, changes: Mapping[str, Any], *, actor: str) -> Campaign:
        c = self.get_campaign(campaign_id)
        creatives = [cr.model_dump() for cr in c.creatives]
        for cr in creatives:
            if cr["id"] == creative_id:
                for key, value in changes.items():
                    if key not in Creative.model_fields or key in ("id", "campaign_id", "updated_at"):
                        raise ValidationError([(key, "is not a changeable creative field; use headline, body, "
                                                     "image_url, landing_url, call_to_action, product_sku, status")],
                                              entity=f"creative {creative_id!r}")
                    cr[key] = value
                break
        else:
            raise NotFound(f"creative {creative_id!r} is not in campaign {campaign_id!r}")
        return self.update_campaign(campaign_id, {"creatives": creatives}, actor=actor, expected_version=c.version,
                                    action="creative:update")

    def remove_creative(self, campaign_id: str, creative_id: str, *, actor: str) -> Campaign:
        c = self.get_campaign(campaign_id)
        creatives = [cr.model_dump() for cr in c.creatives if cr.id != creative_id]
        if len(creatives) == len(c.creatives):
            raise NotFound(f"creative {creative_id!r} is not in campaign {campaign_id!r}")
        return self.update_campaign(campaign_id, {"creatives": creatives}, actor=actor, expected_version=c.version,
                                    action="creative:remove")

    # --- products --------------------------------------------------------------------
    def upsert_products(self, products: Iterable[Product], *, actor: str) -> tuple[int, int]:
        """Create or replace products; identical ones are skipped. Returns ``(created, updated)``."""
        products = list(products)
        for p in products:
            check_product(p, self.rules)
        now = _now()
        created = updated = 0
        with self._engine.begin() as conn:
            existing: dict[str, Product] = {}
            skus = [p.sku for p in products]
            for chunk in range(0, len(skus), 500):
                for row in conn.execute(sa.select(T.products).where(T.products.c.sku.in_(skus[chunk:chunk + 500]))).mappings():
                    existing[row["sku"]] = _product_from(row)
            inserts, audits = [], []
            for p in products:
                before = existing.get(p.sku)
                if before is None:
                    inserts.append(_product_row(p, now))
                    audits.append({"at": now, "actor": actor, "action": "create", "entity_type": "product",
                                   "entity_id": p.sku, "before": None, "after": p.to_doc()})
                    created += 1
                elif before.to_doc() != p.to_doc():
                    conn.execute(sa.update(T.products).where(T.products.c.sku == p.sku).values(**_product_row(p, now)))
                    audits.append({"at": now, "actor": actor, "action": "update", "entity_type": "product",
                                   "entity_id": p.sku, "before": before.to_doc(), "after": p.to_doc()})
                    updated += 1
            if inserts:
                conn.execute(sa.insert(T.products), inserts)
            if audits:
                conn.execute(sa.insert(T.audit_log), audits)
                _bump(conn, "products")
        return created, updated

    def delete_product(self, sku: str, *, actor: str) -> None:
        now = _now()
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(T.products).where(T.products.c.sku == sku)).mappings().first()
            if row is None:
                raise NotFound(f"product {sku!r} does not exist")
            conn.execute(sa.delete(T.products).where(T.products.c.sku == sku))
            _audit(conn, actor, "delete", "product", sku, _product_from(row).to_doc(), None, now)
            _bump(conn, "products")

    def get_product(self, sku: str) -> Product:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(T.products).where(T.products.c.sku == sku)).mappings().first()
        if row is None:
            raise NotFound(f"product {sku!r} does not exist")
        return _product_from(row)

    def list_products(self, *, category: str | None = None, limit: int | None = None, offset: int = 0) -> list[Product]:
        q = sa.select(T.products).order_by(T.products.c.sku)
        if category:
            q = q.where(T.products.c.category == category if "/" in category
                        else T.products.c.category.like(f"{category}/%"))
        if limit is not None:
            q = q.limit(limit).offset(offset)
        with self._engine.connect() as conn:
            return [_product_from(r) for r in conn.execute(q).mappings()]

    # --- bulk ------------------------------------------------------------------------
    def bulk_load(self, *, advertisers: Iterable[Advertiser] = (), campaigns: Iterable[Campaign] = (),
                  products: Iterable[Product] = (), actor: str = "bulk-load") -> dict[str, int]:
        """Insert many new entities fast (executemany in one transaction), all validated.

        Meant for seeding (the simulator: 300 advertisers, 1k campaigns, 3k creatives, 50k
        products in a few seconds on SQLite). Ids must be new (``AlreadyExists`` otherwise).
        The audit log gets one summary entry per entity type instead of one per row.
        """
        advertisers, campaigns, products = list(advertisers), list(campaigns), list(products)
        now = _now()
        adv_by_id = {a.id: a for a in advertisers}
        for a in advertisers:
            check_advertiser(a)
        for p in products:
            check_product(p, self.rules)
        with self._engine.begin() as conn:
            for table, key, ids in ((T.advertisers, T.advertisers.c.id, list(adv_by_id)),
                                    (T.campaigns, T.campaigns.c.id, [c.id for c in campaigns]),
                                    (T.products, T.products.c.sku, [p.sku for p in products])):
                for chunk in range(0, len(ids), 500):
                    taken = conn.execute(sa.select(key).where(key.in_(ids[chunk:chunk + 500]))).first()
                    if taken:
                        raise AlreadyExists(f"{table.name[:-1]} {taken[0]!r} exists already; bulk_load only inserts "
                                            "new entities (use put_campaign/upsert_products to change existing ones)")
            missing = {c.advertiser_id for c in campaigns} - set(adv_by_id)
            for adv_id in missing:
                adv_by_id[adv_id] = self._advertiser_in(conn, adv_id)
            for c in campaigns:
                check_campaign(c, self.rules, now=now, advertiser=adv_by_id[c.advertiser_id])
            if advertisers:
                conn.execute(sa.insert(T.advertisers), [
                    {"id": a.id, "name": a.name, "currency": a.currency, "created_at": now, "updated_at": now}
                    for a in advertisers])
            if campaigns:
                conn.execute(sa.insert(T.campaigns), [_campaign_row(c, now, None, 1) for c in campaigns])
                creative_rows = [r for c in campaigns for r in _creative_rows(c, now)]
                if creative_rows:
                    conn.execute(sa.insert(T.creatives), creative_rows)
            if products:
                conn.execute(sa.insert(T.products), [_product_row(p, now) for p in products])
            counts = {"advertisers": len(advertisers), "campaigns": len(campaigns),
                      "creatives": sum(len(c.creatives) for c in campaigns), "products": len(products)}
            for kind, n in counts.items():
                if n:
                    _audit(conn, actor, "bulk_load", kind, "*", None, {"count": n}, now)
            if advertisers or campaigns:
                _bump(conn, "campaigns")
            if products:
                _bump(conn, "products")
        return counts

    # --- audit -----------------------------------------------------------------------
    def audit_log(self, *, entity_type: str | None = None, entity_id: str | None = None,
                  actor: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        q = sa.select(T.audit_log).order_by(T.audit_log.c.id.desc()).limit(limit)
        if entity_type:
            q = q.where(T.audit_log.c.entity_type == entity_type)
        if entity_id:
            q = q.where(T.audit_log.c.entity_id == entity_id)
        if actor:
            q = q.where(T.audit_log.c.actor == actor)
        with self._engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [AuditEntry(id=r["id"], at=utc(r["at"]), actor=r["actor"], action=r["action"],
                           entity_type=r["entity_type"], entity_id=r["entity_id"], before=r["before"],
                           after=r["after"]) for r in rows]

    # --- spend ledger (written by serving) ----------------------------------------------
    def _upsert(self, table: sa.Table):
        """``INSERT`` of this database's dialect, which has ``on_conflict_do_update``
        (SQLite and PostgreSQL spell it alike)."""
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def add_spend(self, day: int, charges: Mapping[str, float], *, keep_days: int = 7) -> None:
        """Add ``charges`` (campaign id → money) to what was charged on UTC ``day`` (days since
        the epoch), in one transaction; days older than ``keep_days`` are dropped. Increments,
        so any number of server processes may add at once without losing each other's."""
        rows = [{"campaign_id": cid, "day": int(day), "spent": float(amount), "updated_at": _now()}
                for cid, amount in charges.items() if amount]
        if not rows:
            return
        stmt = self._upsert(T.spend_ledger)
        stmt = stmt.on_conflict_do_update(
            index_elements=[T.spend_ledger.c.campaign_id, T.spend_ledger.c.day],
            set_={"spent": T.spend_ledger.c.spent + stmt.excluded.spent, "updated_at": stmt.excluded.updated_at})
        with self._engine.begin() as conn:
            conn.execute(stmt, rows)
            conn.execute(sa.delete(T.spend_ledger).where(T.spend_ledger.c.day < int(day) - keep_days))

    def spend_on(self, day: int) -> dict[str, float]:
        """Campaign id → money charged on UTC ``day`` by every server (``add_spend``)."""
        with self._engine.connect() as conn:
            return dict(conn.execute(sa.select(T.spend_ledger.c.campaign_id, T.spend_ledger.c.spent)
                                     .where(T.spend_ledger.c.day == int(day))).all())

    def put_pacing(self, day: int, writer: str, levels: Mapping[str, "PacingLevels"], *, keep_days: int = 7) -> None:
        """Replace ``writer``'s pacing levels (campaign id → ``PacingLevels``) for UTC ``day``.
        Each server process writes only its own rows, so writers never contend for one."""
        rows = [{"day": int(day), "campaign_id": cid, "writer": writer, "issued": float(lv.issued),
                 "outstanding": float(lv.outstanding), "outstanding_var": float(lv.outstanding_var),
                 "rate": None if lv.rate is None else float(lv.rate), "seen_s": float(lv.seen_s)}
                for cid, lv in levels.items()]
        if not rows:
            return
        stmt = self._upsert(T.pacing_writers)
        stmt = stmt.on_conflict_do_update(
            index_elements=[T.pacing_writers.c.day, T.pacing_writers.c.campaign_id, T.pacing_writers.c.writer],
            set_={k: stmt.excluded[k] for k in ("issued", "outstanding", "outstanding_var", "rate", "seen_s")})
        with self._engine.begin() as conn:
            conn.execute(stmt, rows)
            conn.execute(sa.delete(T.pacing_writers).where(T.pacing_writers.c.day < int(day) - keep_days))

    def pacing_on(self, day: int, *, exclude_writer: str | None = None) -> dict[str, dict[str, "PacingLevels"]]:
        """Campaign id → writer → ``PacingLevels`` on UTC ``day`` (``put_pacing``), without
        ``exclude_writer``'s own rows."""
        t = T.pacing_writers
        query = sa.select(t.c.campaign_id, t.c.writer, t.c.issued, t.c.outstanding, t.c.outstanding_var,
                          t.c.rate, t.c.seen_s).where(t.c.day == int(day))
        if exclude_writer is not None:
            query = query.where(t.c.writer != exclude_writer)
        out: dict[str, dict[str, PacingLevels]] = {}
        with self._engine.connect() as conn:
            for cid, writer, *values in conn.execute(query):
                out.setdefault(cid, {})[writer] = PacingLevels(*values)
        return out

    def retire_pacing(self, day: int, writer: str) -> int:
        """Fold a stopping ``writer``'s rows of UTC ``day`` into one row per campaign under
        ``RETIRED_WRITER`` (issued cost and pending CPC cost added, the newest rate kept), in
        one transaction; returns how many rows it folded. Each process start is a new writer,
        so without this a day of restarts leaves N x ~1,000 rows that every reader sums. The
        folded pending cost counts until the click window has passed since the last folded
        writer stopped, a little longer than each alone would (more is reserved, never less)."""
        t = T.pacing_writers
        with self._engine.begin() as conn:
            gone = conn.execute(sa.delete(t).where(t.c.day == int(day), t.c.writer == writer).returning(
                t.c.campaign_id, t.c.issued, t.c.outstanding, t.c.outstanding_var, t.c.rate, t.c.seen_s)).all()
            if not gone:
                return 0
            stmt = self._upsert(t)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.c.day, t.c.campaign_id, t.c.writer],
                set_={"issued": t.c.issued + stmt.excluded.issued,
                      "outstanding": t.c.outstanding + stmt.excluded.outstanding,
                      "outstanding_var": t.c.outstanding_var + stmt.excluded.outstanding_var,
                      "rate": sa.func.coalesce(stmt.excluded.rate, t.c.rate),
                      "seen_s": sa.func.max(t.c.seen_s, stmt.excluded.seen_s) if conn.dialect.name == "sqlite"
                      else sa.func.greatest(t.c.seen_s, stmt.excluded.seen_s)})
            conn.execute(stmt, [{"day": int(day), "campaign_id": cid, "writer": RETIRED_WRITER, "issued": issued,
                                 "outstanding": out, "outstanding_var": var, "rate": rate, "seen_s": seen}
                                for cid, issued, out, var, rate, seen in gone])
        return len(gone)

    def pacing_writers(self, day: int) -> list[str]:
        """The writers with rows on UTC ``day`` (``put_pacing``), ``RETIRED_WRITER`` aside:
        serving folds those whose process is gone (``retire_pacing``)."""
        t = T.pacing_writers
        with self._engine.connect() as conn:
            return sorted(conn.execute(sa.select(t.c.writer).distinct()
                                       .where(t.c.day == int(day), t.c.writer != RETIRED_WRITER)).scalars())

    def pacing_totals(self, day: int, *, exclude_writer: str | None = None,
                      fresh_after: float | None = None) -> dict[str, PacingTotals]:
        """Campaign id → ``PacingTotals`` of every writer's levels on UTC ``day`` but
        ``exclude_writer``'s, summed in the database: ``outstanding`` only of rows written at or
        after ``fresh_after`` (seconds), ``rate`` from the newest row that has one.

        A process restart is a new writer whose predecessor's rows stay for the day, so a
        server read every writer's rows (~1,000 per writer) before this: 31 writers' 31,000
        rows took the reader's lock long enough to stall requests every 5 s (p99 84 ms at 250
        calls/s against 19 ms without the levels; bench/README, *serve*). The database sums
        them without the GIL; the reply is one row per campaign."""
        t = T.pacing_writers
        where = [t.c.day == int(day)]
        if exclude_writer is not None:
            where.append(t.c.writer != exclude_writer)
        fresh = sa.true() if fresh_after is None else t.c.seen_s >= float(fresh_after)
        sums = sa.select(
            t.c.campaign_id, sa.func.sum(t.c.issued),
            sa.func.sum(sa.case((fresh, t.c.outstanding), else_=0.0)),
            sa.func.sum(sa.case((fresh, t.c.outstanding_var), else_=0.0)),
        ).where(*where).group_by(t.c.campaign_id)
        newest = sa.select(
            t.c.campaign_id, t.c.rate,
            sa.func.row_number().over(partition_by=t.c.campaign_id, order_by=t.c.seen_s.desc()).label("n"),
        ).where(*where, t.c.rate.is_not(None)).subquery()
        with self._engine.connect() as conn:
            rates = dict(conn.execute(sa.select(newest.c.campaign_id, newest.c.rate).where(newest.c.n == 1)).all())
            return {cid: PacingTotals(float(issued or 0.0), float(out or 0.0), float(var or 0.0), rates.get(cid))
                    for cid, issued, out, var in conn.execute(sums)}

    # --- snapshot reads (used by campaigns._snapshot) --------------------------------
    def _read_active(self) -> tuple[tuple[int, int], list[Campaign], list[Advertiser]]:
        with self._engine.connect() as conn:
            vrows = dict(conn.execute(sa.select(T.store_versions.c.name, T.store_versions.c.version)).all())
            found = self._load_campaigns(conn, T.campaigns.c.status == "active")
            advs = [_advertiser_from(r) for r in conn.execute(sa.select(T.advertisers)).mappings()]
        return (vrows.get("campaigns", 0), vrows.get("products", 0)), found, advs

    def _read_products(self) -> list[Product]:
        with self._engine.connect() as conn:
            return [_product_from(r) for r in conn.execute(sa.select(T.products).order_by(T.products.c.sku)).mappings()]


def _set_path(doc: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ValidationError([(path, f"{part!r} is not a section; valid sections: schedule, budget, bid, "
                                          "targeting, frequency_cap")], entity="update")
        node = node[part]
    if parts[-1] not in node:
        raise ValidationError([(path, f"unknown field; valid here: {', '.join(node)}")], entity="update")
    node[parts[-1]] = value
