"""Frequency caps: whether a campaign skips users whose impressions cannot be counted.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing campaigns keep serving users without personalization consent, as they did
    op.add_column("campaigns", sa.Column("freq_cap_skip_uncounted", sa.Boolean, nullable=False,
                                         server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("freq_cap_skip_uncounted")
