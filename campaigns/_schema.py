"""SQLAlchemy Core tables of the campaign store (the shape the migrations in _migrations build).

Scalar fields people filter on are columns; targeting, dayparting and exclusions are
JSON (portable between SQLite and PostgreSQL). ``store_versions`` holds one counter per
domain ('campaigns', 'products') bumped in the same transaction as every change, so a
reader detects change with one primary-key lookup.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.sql.expression import false

metadata = MetaData()

advertisers = Table(
    "advertisers", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

campaigns = Table(
    "campaigns", metadata,
    Column("id", String(64), primary_key=True),
    Column("advertiser_id", String(64), ForeignKey("advertisers.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("objective", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("start_at", DateTime(timezone=True), nullable=False),
    Column("end_at", DateTime(timezone=True), nullable=True),
    Column("dayparting", JSON, nullable=False),
    Column("daily_budget", Float, nullable=True),
    Column("lifetime_budget", Float, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("bid_strategy", String(8), nullable=False),
    Column("bid_amount", Float, nullable=False),
    Column("targeting", JSON, nullable=False),
    Column("freq_cap_day", Integer, nullable=True),
    Column("freq_cap_week", Integer, nullable=True),
    Column("freq_cap_skip_uncounted", Boolean, nullable=False, server_default=false()),
    Column("excluded_categories", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
)

creatives = Table(
    "creatives", metadata,
    Column("id", String(64), primary_key=True),
    Column("campaign_id", String(64), ForeignKey("campaigns.id"), nullable=False, index=True),
    Column("headline", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("image_url", Text, nullable=False),
    Column("landing_url", Text, nullable=False),
    Column("call_to_action", String(64), nullable=False),
    Column("product_sku", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("position", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

products = Table(
    "products", metadata,
    Column("sku", String(128), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("brand", String(200), nullable=False),
    Column("category", String(128), nullable=False, index=True),
    Column("price", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("availability", String(16), nullable=False),
    Column("landing_url", Text, nullable=False),
    Column("quality", Float, nullable=True),
    Column("advertiser_id", String(64), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity_type", String(32), nullable=False),
    Column("entity_id", String(128), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Index("ix_audit_entity", "entity_type", "entity_id"),
)

store_versions = Table(
    "store_versions", metadata,
    Column("name", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
)

spend_ledger = Table(
    "spend_ledger", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("spent", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""What serving charged each campaign per UTC day (days since the epoch), summed over every
server process: a restarted process takes its share of it instead of pacing the day's
budget again from zero (``serving._delivery``)."""

pacing_writers = Table(
    "pacing_writers", metadata,
    Column("day", Integer, primary_key=True),
    Column("campaign_id", String(64), primary_key=True),
    Column("writer", String(64), primary_key=True),
    Column("issued", Float, nullable=False),
    Column("outstanding", Float, nullable=False),
    Column("outstanding_var", Float, nullable=False),
    Column("rate", Float, nullable=True),
    Column("seen_s", Float, nullable=False),
)
"""Each server process's (``writer``'s) pacing levels per campaign and UTC day, replaced at
every flush: the cost it issued today (the demand signal), the expected cost and variance of
its CPC impressions still waiting for their click, its estimate of the campaign's unthrottled
spend rate, and when (its clock, epoch seconds). Every process reads the others' rows, so
all of them pace the whole budget against the same totals (``serving._delivery``)."""

