"""The marketer's domain as frozen pydantic models: shape and types only.

Business rules (budgets, bids, sensitive categories, URLs ...) live in ``_validation``
as pure functions, so that every path (CLI, YAML import, gRPC, bulk load) checks the
same rules and reports them the same way. ``to_doc``/``from_doc`` give the plain-dict
form used by YAML import/export, the audit log and JSON columns.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from campaigns.errors import ValidationError

Objective = Literal["awareness", "traffic", "conversions"]
Status = Literal["draft", "active", "paused", "ended", "archived"]
BidStrategy = Literal["CPC", "CPM"]
Availability = Literal["in_stock", "out_of_stock", "preorder"]
CreativeStatus = Literal["active", "paused"]

OBJECTIVES: tuple[str, ...] = ("awareness", "traffic", "conversions")
STATUSES: tuple[str, ...] = ("draft", "active", "paused", "ended", "archived")
BID_STRATEGIES: tuple[str, ...] = ("CPC", "CPM")
AVAILABILITIES: tuple[str, ...] = ("in_stock", "out_of_stock", "preorder")

_TIMESTAMPS = {"created_at", "updated_at", "version"}


def utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values are taken to be UTC (SQLite drops the zone)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    def to_doc(self, *, timestamps: bool = False) -> dict[str, Any]:
        """Plain JSON/YAML-able dict (datetimes as ISO strings); no timestamps unless asked."""
        doc = self.model_dump(mode="json", exclude=None if timestamps else _TIMESTAMPS)
        return doc

    @classmethod
    def from_doc(cls, doc: Any, *, where: str = ""):
        """Parse a plain dict, turning pydantic's type errors into a ``ValidationError``."""
        try:
            return cls.model_validate(doc)
        except pydantic.ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    allowed = ", ".join(cls.model_fields) if len(err["loc"]) == 1 else "see docs/campaigns.md"
                    msg = f"unknown field; remove it (allowed: {allowed})"
                elif err["type"] == "missing":
                    msg = "is required; add it"
                elif err["type"] == "literal_error":
                    msg = f"{msg}; got {err.get('input')!r}"
                problems.append((field, msg))
            raise ValidationError(problems, entity=f"{cls.__name__.lower()} {where}".strip()) from None


def _norm_tokens(values: Any) -> tuple[str, ...]:
    """Lower-case, strip, drop empties and duplicates, keep the first order."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    seen: dict[str, None] = {}
    for v in values:
        token = str(v).strip().lower()
        if token:
            seen.setdefault(token, None)
    return tuple(seen)


class Advertiser(_Model):
    """A company that pays for campaigns; owns campaigns (and optionally products)."""

    id: str
    name: str
    currency: str = "EUR"
    """Default currency of its campaigns' budgets."""
    created_at: datetime | None = None
    updated_at: datetime | None = None


class DaypartWindow(_Model):
    """Hours ``[start_hour, end_hour)`` of the user's local time on the given weekdays (0 = Monday)."""

    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    start_hour: int = 0
    end_hour: int = 24


class Schedule(_Model):
    start: datetime
    """First moment the campaign may serve (UTC)."""
    end: datetime | None = None
    """Moment it stops (exclusive, UTC); ``None`` runs until paused or the lifetime budget is spent."""
    dayparting: tuple[DaypartWindow, ...] = ()
    """Empty means all day, every day."""

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else utc(v)


class Budget(_Model):
    daily: float | None = None
    lifetime: float | None = None
    currency: str = "EUR"

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class Bid(_Model):
    strategy: BidStrategy = "CPC"
    """CPC: ``amount`` per click; CPM: ``amount`` per thousand impressions."""
    amount: float


class Targeting(_Model):
    """Who and where the campaign may serve. Every list is an OR; lists combine with AND; empty = any."""

    scenes: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    """Intent keywords matched against the spoken intent."""
    categories: tuple[str, ...] = ()
    """Product categories (taxonomy leaf ``top/leaf`` or whole top)."""
    location_categories: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    @field_validator("scenes", "objects", "keywords", "categories", "location_categories", "devices", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> tuple[str, ...]:
        return _norm_tokens(v)

    @field_validator("regions", mode="before")
    @classmethod
    def _regions(cls, v: Any) -> tuple[str, ...]:
        return tuple(t.upper() for t in _norm_tokens(v))


class FrequencyCap(_Model):
    per_day: int | None = None
    """Impressions per user per (UTC) day; ``None`` = no cap."""
    per_week: int | None = None
    """Impressions per user per rolling 7 days; ``None`` = no cap."""
    skip_uncounted: bool = False
    """Users without personalization consent cannot be counted (nothing user-keyed may be
    stored for them), so a cap cannot hold for them: ``False`` serves them the campaign
    uncapped, ``True`` does not serve it to them at all."""


class Creative(_Model):
    id: str
    campaign_id: str = ""
    headline: str
    body: str = ""
    image_url: str = ""
    landing_url: str
    call_to_action: str = "Shop now"
    product_sku: str | None = None
    """The product the ad points at, if any (shown next to the ad, used for conversions)."""
    status: CreativeStatus = "active"
    updated_at: datetime | None = None


class Campaign(_Model):
    """A campaign with its creatives. Frozen: change it with ``model_copy(update=...)``."""

    id: str
    advertiser_id: str
    name: str
    objective: Objective = "traffic"
    status: Status = "draft"
    schedule: Schedule
    budget: Budget
    bid: Bid
    targeting: Targeting = Field(default_factory=Targeting)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    excluded_categories: tuple[str, ...] = ()
    """Brand safety: never serve next to (or for) these categories; sensitive tops allowed here."""
    creatives: tuple[Creative, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0
    """Bumped on every change of this campaign (optimistic concurrency, audit)."""

    @field_validator("excluded_categories", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> tuple[str, ...]:
        return _norm_tokens(v)

    def to_doc(self, *, timestamps: bool = False) -> dict[str, Any]:
        doc = super().to_doc(timestamps=timestamps)
        for creative in doc["creatives"]:
            creative.pop("campaign_id", None)
            if not timestamps:
                creative.pop("updated_at", None)
        return doc

    # --- pure helpers serving uses -------------------------------------------------
    def active_creatives(self) -> tuple[Creative, ...]:
        return tuple(c for c in self.creatives if c.status == "active")

    def in_flight(self, now: datetime) -> bool:
        """Status active and ``now`` inside [start, end)."""
        now = utc(now)
        return (self.status == "active" and self.schedule.start <= now
                and (self.schedule.end is None or now < self.schedule.end))

    def in_daypart(self, local_weekday: int, local_hour: int) -> bool:
        """True when the user's local weekday/hour falls in a dayparting window (or there are none)."""
        if not self.schedule.dayparting:
            return True
        return any(local_weekday in w.weekdays and w.start_hour <= local_hour < w.end_hour
                   for w in self.schedule.dayparting)

    def serves_at(self, now: datetime, local_weekday: int, local_hour: int) -> bool:
        return self.in_flight(now) and self.in_daypart(local_weekday, local_hour)

    def daily_plan(self, day: date | None = None) -> float | None:
        """Planned spend for one day: the daily budget, else the lifetime budget spread evenly
        over the scheduled days (``None`` when neither gives a per-day figure)."""
        if self.budget.daily is not None:
            return self.budget.daily
        if self.budget.lifetime is not None and self.schedule.end is not None:
            days = max(1, (self.schedule.end - self.schedule.start + timedelta(seconds=86399)).days)
            return self.budget.lifetime / days
        return None


class Product(_Model):
    """A catalog item that can be suggested (and that ads may point at)."""

    sku: str
    title: str
    brand: str = ""
    category: str
    price: float
    currency: str = "EUR"
    availability: Availability = "in_stock"
    landing_url: str
    quality: float | None = None
    """Optional prior quality in [0, 1] (ratings, returns); serving may use it as a feature."""
    advertiser_id: str | None = None
    """The merchant, when the product belongs to an advertiser's feed."""
    updated_at: datetime | None = None

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class AuditEntry(_Model):
    """One recorded change: who did what to which entity, with the state before and after."""

    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict | None = None
    after: dict | None = None
