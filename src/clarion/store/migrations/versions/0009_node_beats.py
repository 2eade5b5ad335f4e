"""Per-node heartbeats (issue #10): one `node_beats` row per node replaces the `alive_at` of
every presence row, and `online` becomes one row per node and user written on come and go.

Old rows move: each node's newest presence `alive_at` becomes its beat; each `online` row
becomes a closed interval [since, seen_at] (its last beat), so escalations already pending
judge `when: offline` as before.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
TS = sa.DateTime(timezone=True)
MOVED = "(before 0009)"  # the node name of moved `online` rows (they had none)


def upgrade() -> None:
    op.create_table(
        "node_beats",
        sa.Column("node", sa.String(40), primary_key=True),
        sa.Column("alive_at", TS, nullable=False),
    )
    op.execute(
        "INSERT INTO node_beats (node, alive_at)"
        " SELECT node, MAX(alive_at) FROM presence GROUP BY node"
    )
    with op.batch_alter_table("presence") as t:
        t.drop_column("alive_at")
    op.rename_table("online", "online_0008")
    op.create_table(
        "online",
        sa.Column("node", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("since", TS, nullable=False),
        sa.Column("until", TS),
    )
    op.create_index("ix_online_user", "online", ["user_id"])
    op.create_index("ix_online_until", "online", ["until"])
    op.execute(
        "INSERT INTO online (node, user_id, since, until)"
        f" SELECT '{MOVED}', user_id, since, seen_at FROM online_0008"
    )
    op.drop_table("online_0008")


def downgrade() -> None:
    op.rename_table("online", "online_0009")
    op.create_table(
        "online",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("since", TS, nullable=False),
        sa.Column("seen_at", TS, nullable=False),
    )
    op.execute(
        "INSERT INTO online (user_id, since, seen_at)"
        " SELECT o.user_id, MAX(o.since), MAX(COALESCE(o.until, b.alive_at, o.since))"
        " FROM online_0009 o LEFT JOIN node_beats b ON b.node = o.node GROUP BY o.user_id"
    )
    op.drop_table("online_0009")
    with op.batch_alter_table("presence") as t:
        t.add_column(sa.Column("alive_at", TS))
    op.execute(
        "UPDATE presence SET alive_at ="
        " (SELECT b.alive_at FROM node_beats b WHERE b.node = presence.node)"
    )
    op.drop_table("node_beats")
