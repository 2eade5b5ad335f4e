"""Inbox at scale: routes with ordinals, watermarks and marks.

`notification_streams` (shared routes) and the personal rows of `inbox` become one `routes`
table, numbered per stream (`n`) and per stream and type (`tn`), so counting a user's unread
costs index probes instead of a scan of the history. Per-user state splits into `watermarks`
(read-all / archive-all: one row per stream) and `marks` (one notification at a time). Collapse
moves from `notifications`/`inbox` onto the routes (with the key itself, while a
route can still be collapsed). Existing rows are carried over: ordinals from
seq order, `also` from each notification's streams, marks from every state row that says
something.

Revision ID: 0004
Revises: 0003
"""

from collections import defaultdict

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
TS = sa.DateTime(timezone=True)
FALSE = sa.false()


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("notification_id", sa.String(26), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("tn", sa.BigInteger),
        sa.Column("expires_at", TS),
        sa.Column("replaced", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("also", sa.LargeBinary),
        sa.Column("collapsed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("irregular", sa.Integer, nullable=False, server_default="0"),
        sa.Column("collapse_key", sa.String(128)),
    )
    op.create_table(
        "hole_buckets",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "stream_types",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "marks",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("read_at", TS),
        sa.Column("unread", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("archived_at", TS),
        sa.Column("seen_at", TS),
    )
    op.create_table(
        "watermarks",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("read_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("archived_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("read_at", TS),
        sa.Column("archived_at", TS),
    )
    with op.batch_alter_table("streams") as batch:
        batch.add_column(sa.Column("routed", sa.BigInteger, nullable=False, server_default="0"))

    # Shared routes, numbered in seq order per stream and per stream and type.
    op.execute(
        "INSERT INTO routes (stream, seq, notification_id, type, n, tn, expires_at, replaced,"
        " collapsed, irregular) "
        "SELECT ns.stream, ns.seq, ns.notification_id, n.type,"
        " ROW_NUMBER() OVER (PARTITION BY ns.stream ORDER BY ns.seq),"
        " ROW_NUMBER() OVER (PARTITION BY ns.stream, n.type ORDER BY ns.seq),"
        " n.expires_at, n.replaced_by IS NOT NULL, n.collapsed, 0 "
        "FROM notification_streams ns JOIN notifications n ON n.id = ns.notification_id"
    )
    # Personal routes: the seq is that of the notification's event on the user's stream.
    op.create_index("ix_tmp_events_notification", "events", ["notification_id"])
    op.execute(
        "INSERT INTO routes (stream, seq, notification_id, type, n, expires_at, replaced,"
        " collapsed, irregular) "
        "SELECT e.stream, e.seq, i.notification_id, n.type,"
        " ROW_NUMBER() OVER (PARTITION BY e.stream ORDER BY e.seq),"
        " n.expires_at, i.replaced_by IS NOT NULL, i.collapsed, 0 "
        "FROM inbox i JOIN notifications n ON n.id = i.notification_id "
        "JOIN events e ON e.notification_id = i.notification_id"
        " AND e.stream = 'user:' || i.user_id AND e.kind = 'notification' "
        "WHERE i.personal"
    )
    op.drop_index("ix_tmp_events_notification", "events")
    _fill_also()
    op.execute("UPDATE routes SET irregular = 1 WHERE expires_at IS NOT NULL")
    op.execute("UPDATE routes SET irregular = 2 WHERE replaced")  # hidden, counted by bucket
    op.execute(
        "INSERT INTO hole_buckets (stream, bucket, type, n) SELECT stream, seq / 1024, type,"
        " COUNT(*) FROM routes WHERE irregular = 2 GROUP BY stream, seq / 1024, type"
    )
    op.execute(
        "UPDATE routes SET collapse_key = (SELECT n.collapse_key FROM notifications n"
        " WHERE n.id = routes.notification_id) WHERE NOT replaced"
    )
    op.create_index("ix_routes_type", "routes", ["stream", "type", "seq"])
    op.create_index("ix_routes_notification", "routes", ["notification_id"])
    op.create_index(
        "ix_routes_hidden",
        "routes",
        ["stream", "seq"],
        sqlite_where=sa.text("irregular = 2"),
        postgresql_where=sa.text("irregular = 2"),
    )
    op.create_index(
        "ix_routes_collapse",
        "routes",
        ["stream", "collapse_key"],
        sqlite_where=sa.text("collapse_key IS NOT NULL"),
        postgresql_where=sa.text("collapse_key IS NOT NULL"),
    )
    op.create_index(
        "ix_routes_irregular",
        "routes",
        ["stream", "seq"],
        sqlite_where=sa.text("irregular = 1"),
        postgresql_where=sa.text("irregular = 1"),
    )
    op.execute(
        "UPDATE streams SET routed = COALESCE("
        "(SELECT MAX(r.n) FROM routes r WHERE r.stream = streams.name), 0)"
    )
    op.execute(
        "INSERT INTO stream_types (stream, type, n) "
        "SELECT stream, type, MAX(tn) FROM routes WHERE tn IS NOT NULL GROUP BY stream, type"
    )
    op.execute(
        "INSERT INTO marks (user_id, notification_id, read_at, unread, archived_at, seen_at) "
        "SELECT user_id, notification_id, read_at, FALSE, archived_at, seen_at FROM inbox "
        "WHERE read_at IS NOT NULL OR archived_at IS NOT NULL OR seen_at IS NOT NULL"
    )
    op.create_index("ix_marks_notification", "marks", ["notification_id"])
    op.create_index(
        "ix_notifications_expires",
        "notifications",
        ["expires_at"],
        sqlite_where=sa.text("expires_at IS NOT NULL"),
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.create_index(
        "ix_events_unrouted_created",
        "events",
        ["created_at"],
        sqlite_where=sa.text("notification_id IS NULL"),
        postgresql_where=sa.text("notification_id IS NULL"),
    )
    op.drop_table("inbox")
    op.drop_table("notification_streams")
    op.drop_index("ix_notifications_collapse", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("collapsed")


def _fill_also() -> None:
    """Routes of a notification that went several ways name those that take precedence, as
    publishing does now: shared streams over personal ones, earlier shared over later."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT notification_id, stream, seq FROM routes WHERE notification_id IN"
            " (SELECT notification_id FROM routes GROUP BY notification_id HAVING COUNT(*) > 1)"
        )
    ).all()
    by_note: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for nid, stream, seq in rows:
        by_note[nid].append((stream, seq))
    updates = []
    for found in by_note.values():
        shared = sorted((s, q) for s, q in found if not s.startswith("user:"))
        for stream, seq in found:
            if stream.startswith("user:"):
                above = dict(shared)
            else:
                above = dict(shared[: shared.index((stream, seq))])
            if above:
                updates.append({"s": stream, "q": seq, "a": orjson.dumps(above)})
    if updates:
        bind.execute(
            sa.text("UPDATE routes SET also = :a, irregular = 1 WHERE stream = :s AND seq = :q"),
            updates,
        )


def downgrade() -> None:
    raise NotImplementedError("0004 is not reversible; restore a backup instead")
