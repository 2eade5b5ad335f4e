"""Each node's stats snapshot for the console's Live page across nodes (store/nodes.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node", sa.String(40), primary_key=True),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stats", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
