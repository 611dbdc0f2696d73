"""Pacing writers: each server process's pacing levels per campaign and UTC day.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacing_writers",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.String(64), primary_key=True),
        sa.Column("writer", sa.String(64), primary_key=True),
        sa.Column("issued", sa.Float, nullable=False),
        sa.Column("outstanding", sa.Float, nullable=False),
        sa.Column("outstanding_var", sa.Float, nullable=False),
        sa.Column("rate", sa.Float, nullable=True),
        sa.Column("seen_s", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pacing_writers")
