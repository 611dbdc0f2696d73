"""Initial campaign store: advertisers, campaigns, creatives, products, audit log, versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "advertisers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("advertiser_id", sa.String(64), sa.ForeignKey("advertisers.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("objective", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_at", TS, nullable=False),
        sa.Column("end_at", TS, nullable=True),
        sa.Column("dayparting", sa.JSON, nullable=False),
        sa.Column("daily_budget", sa.Float, nullable=True),
        sa.Column("lifetime_budget", sa.Float, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("bid_strategy", sa.String(8), nullable=False),
        sa.Column("bid_amount", sa.Float, nullable=False),
        sa.Column("targeting", sa.JSON, nullable=False),
        sa.Column("freq_cap_day", sa.Integer, nullable=True),
        sa.Column("freq_cap_week", sa.Integer, nullable=True),
        sa.Column("excluded_categories", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_campaigns_advertiser_id", "campaigns", ["advertiser_id"])
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_table(
        "creatives",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("headline", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("image_url", sa.Text, nullable=False),
        sa.Column("landing_url", sa.Text, nullable=False),
        sa.Column("call_to_action", sa.String(64), nullable=False),
        sa.Column("product_sku", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_creatives_campaign_id", "creatives", ["campaign_id"])
    op.create_table(
        "products",
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("brand", sa.String(200), nullable=False),
        sa.Column("category", sa.String(128), nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("availability", sa.String(16), nullable=False),
        sa.Column("landing_url", sa.Text, nullable=False),
        sa.Column("quality", sa.Float, nullable=True),
        sa.Column("advertiser_id", sa.String(64), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_products_category", "products", ["category"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    op.create_index("ix_audit_entity", "audit_log", ["entity_type", "entity_id"])
    versions = op.create_table(
        "store_versions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.bulk_insert(versions, [{"name": "campaigns", "version": 0}, {"name": "products", "version": 0}])


def downgrade() -> None:
    for table in ("store_versions", "audit_log", "products", "creatives", "campaigns", "advertisers"):
        op.drop_table(table)
