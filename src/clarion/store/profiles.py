"""User profiles (email, name, locale, time zone, free data) and the right to erasure.

A profile is what the app tells Clarion about a user so that channels beyond the open tab can
reach it: the email channel sends to `email`, templates speak the user's `locale`. Erasure
(`forget`) removes everything Clarion holds about one user, in one transaction, and says how
many rows went from each table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Profile, utcnow
from clarion.store.db import Database, aware
from clarion.store.schema import (
    digest_items,
    email_outbox,
    escalations,
    events,
    follows,
    hole_buckets,
    hole_totals,
    idempotency,
    marks,
    notifications,
    online,
    preferences,
    profiles,
    push_outbox,
    push_subscriptions,
    routes,
    streams,
    throttles,
    tickets,
    user_settings,
    watermarks,
)
from clarion.store.schema_control import deliveries, last_seen, presence, webhook_outbox
from clarion.streams import user_stream

FIELDS = ("email", "name", "locale", "timezone")


def profile_row(profile: Profile) -> dict[str, Any]:
    return {
        "user_id": profile.id,
        "email": profile.email,
        "name": profile.name,
        "locale": profile.locale,
        "timezone": profile.timezone,
        "data": orjson.dumps(profile.data) if profile.data else None,
        "updated_at": utcnow(),
    }


def profile_of(row: Any) -> Profile:
    return Profile(
        row.user_id,
        row.email,
        row.name,
        row.locale,
        row.timezone,
        orjson.loads(row.data) if row.data else {},
        row.email_status,
        aware(row.updated_at) if row.updated_at is not None else None,
    )


async def upsert_profiles(db: Database, conn: AsyncConnection, items: Sequence[Profile]) -> None:
    """Write whole profiles; a changed address is no longer known to be bad."""
    for profile in items:
        row = profile_row(profile)
        old = (
            await conn.execute(select(profiles.c.email).where(profiles.c.user_id == profile.id))
        ).first()
        keep_status = old is not None and old[0] == profile.email
        set_ = {k: v for k, v in row.items() if k != "user_id"}
        if not keep_status:
            set_["email_status"] = None
        stmt = db.insert(profiles).values(row)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=set_))


async def load_profiles(conn: AsyncConnection, users: Sequence[str]) -> dict[str, Profile]:
    if not users:
        return {}
    rows = await conn.execute(select(profiles).where(profiles.c.user_id.in_(list(users))))
    return {r.user_id: profile_of(r) for r in rows.all()}


async def mark_bad(conn: AsyncConnection, users: Sequence[str]) -> None:
    """These users' addresses were refused for good: no more mail to them until changed."""
    if users:
        await conn.execute(
            update(profiles).where(profiles.c.user_id.in_(list(users))).values(email_status="bad")
        )


class Profiles:
    """Profiles and erasure."""

    db: Database

    async def put_profiles(self, items: Sequence[Profile]) -> None:
        async with self.db.write() as conn:
            await upsert_profiles(self.db, conn, items)

    async def profile(self, user: str) -> Profile | None:
        async with self.db.read() as conn:
            return (await load_profiles(conn, [user])).get(user)

    async def forget(self, user: str) -> dict[str, int]:
        """Erase a user: profile, preferences, inbox state, follows, personal notifications
        (with their routes, events and pending escalations), push subscriptions and pending
        pushes and emails. Notifications also sent to other users by name, or to shared
        streams, stay for them; only this user's routes to them go."""
        stream = user_stream(user)
        out: dict[str, int] = {}

        async def gone(table: Any, where: Any) -> None:
            result = await conn.execute(delete(table).where(where))
            out[table.name] = out.get(table.name, 0) + int(result.rowcount or 0)

        async with self.db.write() as conn:
            mine = list(
                (
                    await conn.execute(
                        select(routes.c.notification_id).where(routes.c.stream == stream)
                    )
                ).scalars()
            )
            elsewhere = set()
            if mine:
                elsewhere = set(
                    (
                        await conn.execute(
                            select(routes.c.notification_id).where(
                                routes.c.notification_id.in_(mine), routes.c.stream != stream
                            )
                        )
                    ).scalars()
                )
            only = sorted(set(mine) - elsewhere)
            await gone(routes, routes.c.stream == stream)
            await gone(events, events.c.stream == stream)
            await gone(hole_buckets, hole_buckets.c.stream == stream)
            await gone(hole_totals, hole_totals.c.stream == stream)
            await gone(streams, streams.c.name == stream)
            for chunk in _chunks(only):
                await gone(escalations, escalations.c.notification_id.in_(chunk))
                await gone(idempotency, idempotency.c.notification_id.in_(chunk))
                await gone(email_outbox, email_outbox.c.notification_id.in_(chunk))
                await gone(push_outbox, push_outbox.c.notification_id.in_(chunk))
                await gone(marks, marks.c.notification_id.in_(chunk))
                await gone(digest_items, digest_items.c.notification_id.in_(chunk))
                await gone(deliveries, deliveries.c.notification_id.in_(chunk))
                await gone(notifications, notifications.c.id.in_(chunk))
            for table in (
                profiles,
                marks,
                watermarks,
                follows,
                preferences,
                user_settings,
                throttles,
                digest_items,
                push_outbox,
                push_subscriptions,
                email_outbox,
                online,
                tickets,
                presence,
                last_seen,
                deliveries,
                webhook_outbox,
            ):
                await gone(table, table.c.user_id == user)
        return {k: v for k, v in sorted(out.items()) if v}


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
