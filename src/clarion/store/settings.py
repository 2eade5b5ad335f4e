"""Settings in the store: the app's rules per type (cached), users' preferences, and values
made once for the whole cluster (the VAPID key)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import preferences as rules
from clarion.domain import Meta, StoredEvent, TypeSettings, UserPreferences, utcnow
from clarion.events import preferences_event
from clarion.store.db import Database
from clarion.store.schema import events, preferences, server_settings, type_settings, user_settings
from clarion.store.streams import allocate
from clarion.streams import user_stream

TYPES_CACHE_SECONDS = 5.0


class TypeCache:
    """Per-type settings, cached a few seconds (they change rarely; writes here reset it)."""

    def __init__(self) -> None:
        self._types: dict[str, TypeSettings] | None = None
        self._until = 0.0

    async def get(self, conn: AsyncConnection) -> dict[str, TypeSettings]:
        if self._types is not None and self._until >= time.monotonic():
            return self._types
        return await conn.run_sync(self.get_in)  # one loader for both

    def get_in(self, conn: Connection) -> dict[str, TypeSettings]:
        """`get` on a synchronous connection (inside `Database.run`)."""
        now = time.monotonic()
        if self._types is None or self._until < now:
            rows = conn.execute(select(type_settings)).all()
            self._types = {r.type: TypeSettings(*r) for r in rows}
            self._until = now + TYPES_CACHE_SECONDS
        return self._types

    def reset(self) -> None:
        self._types = None


async def load_preferences(conn: AsyncConnection, user: str) -> UserPreferences:
    """A user's per-type choices and quiet hours."""
    rows = (
        await conn.execute(
            select(preferences.c.type, preferences.c.in_app, preferences.c.push).where(
                preferences.c.user_id == user
            )
        )
    ).all()
    prefs = UserPreferences(types={t: (a, p) for t, a, p in rows})
    row = (await conn.execute(select(user_settings).where(user_settings.c.user_id == user))).first()
    if row is not None:
        prefs.timezone, prefs.quiet_start, prefs.quiet_end = row[1:]
    return prefs


async def muted_types(
    conn: AsyncConnection, user: str, types: dict[str, TypeSettings]
) -> frozenset[str]:
    """The types a user does not want in-app, its choices over the app's defaults."""
    rows = (
        await conn.execute(
            select(preferences.c.type, preferences.c.in_app).where(
                preferences.c.user_id == user, preferences.c.in_app.is_not(None)
            )
        )
    ).all()
    prefs = UserPreferences(types={t: (a, None) for t, a in rows})
    return rules.muted(prefs, types)


class StoredSettings:
    """Type settings, user preferences and server-wide settings."""

    db: Database
    types: TypeCache

    async def type_settings(self) -> dict[str, TypeSettings]:
        async with self.db.read() as conn:
            return dict(await self.types.get(conn))

    async def put_type_settings(self, value: TypeSettings) -> None:
        row = {
            "type": value.type,
            "in_app": value.in_app,
            "push": value.push,
            "mandatory": value.mandatory,
            "throttle_count": value.throttle_count,
            "throttle_seconds": value.throttle_seconds,
            "digest_seconds": value.digest_seconds,
        }
        async with self.db.write() as conn:
            stmt = self.db.insert(type_settings).values(row)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["type"], set_=row))
        self.types.reset()

    async def delete_type_settings(self, type: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(delete(type_settings).where(type_settings.c.type == type))
        self.types.reset()
        return bool(result.rowcount)

    async def preferences(self, user: str) -> tuple[UserPreferences, dict[str, TypeSettings]]:
        async with self.db.read() as conn:
            return await load_preferences(conn, user), dict(await self.types.get(conn))

    async def put_preferences(
        self,
        user: str,
        types: dict[str, tuple[bool | None, bool | None]],
        zone: tuple[str | None, str | None, str | None] | None,
    ) -> StoredEvent:
        """Store a user's choices (None: back to the app's default) and tell its sessions
        which types are muted now (`preferences` event on the user's stream)."""
        async with self.db.write() as conn:
            for type, (in_app, push) in types.items():
                where = and_(preferences.c.user_id == user, preferences.c.type == type)
                await conn.execute(delete(preferences).where(where))
                if in_app is not None or push is not None:
                    await conn.execute(
                        insert(preferences).values(
                            user_id=user, type=type, in_app=in_app, push=push
                        )
                    )
            if zone is not None:
                timezone, start, end = zone
                row = {"timezone": timezone or "UTC", "quiet_start": start, "quiet_end": end}
                stmt = self.db.insert(user_settings).values(user_id=user, **row)
                await conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=row))
            muted = sorted(await muted_types(conn, user, await self.types.get(conn)))
            stream = user_stream(user)
            seq = (await allocate(self.db, conn, {stream: 1}))[stream]
            payload = preferences_event(stream, seq, muted)
            await conn.execute(
                insert(events).values(
                    stream=stream, seq=seq, kind="preferences", payload=payload, created_at=utcnow()
                )
            )
        return StoredEvent(stream, seq, payload, Meta("preferences", muted=tuple(muted)))

    async def setting(self, name: str, make: Callable[[], str]) -> str:
        """A value made once for the whole cluster: the first node to get here stores `make()`,
        every other one (at the same time or later) reads it."""
        async with self.db.write() as conn:
            stmt = self.db.insert(server_settings).values(
                name=name, value=make(), created_at=utcnow()
            )
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            value = (
                await conn.execute(
                    select(server_settings.c.value).where(server_settings.c.name == name)
                )
            ).scalar_one()
        return str(value)
