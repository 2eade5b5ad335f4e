"""Settings in the store: the app's rules per type (cached), users' preferences, and values
made once for the whole cluster (the VAPID key)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import preferences as rules
from clarion.domain import Escalation, Meta, StoredEvent, TypeSettings, UserPreferences, utcnow
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
            self._types = {r.type: type_from_row(r) for r in rows}
            self._until = now + TYPES_CACHE_SECONDS
        return self._types

    def reset(self) -> None:
        self._types = None


def type_from_row(r: Any) -> TypeSettings:
    extra = orjson.loads(r.channels) if r.channels else {}
    return TypeSettings(
        type=r.type,
        in_app=r.in_app,
        push=r.push,
        mandatory=r.mandatory,
        throttle_count=r.throttle_count,
        throttle_seconds=r.throttle_seconds,
        digest_seconds=r.digest_seconds,
        email=bool(r.email),
        templates=extra.get("templates", {}),
        escalate=tuple(Escalation(**e) for e in extra.get("escalate", [])),
        locale=extra.get("locale", "en"),
    )


def type_channels(value: TypeSettings) -> bytes | None:
    """The JSON column of a type's templates, escalation rules and default locale."""
    if not (value.templates or value.escalate or value.locale != "en"):
        return None
    return orjson.dumps(
        {
            "templates": value.templates,
            "escalate": [dataclasses.asdict(e) for e in value.escalate],
            "locale": value.locale,
        }
    )


async def load_preferences(conn: AsyncConnection, user: str) -> UserPreferences:
    """A user's per-type choices and quiet hours."""
    rows = (
        await conn.execute(
            select(
                preferences.c.type, preferences.c.in_app, preferences.c.push, preferences.c.email
            ).where(preferences.c.user_id == user)
        )
    ).all()
    prefs = UserPreferences(
        types={t: (a, p) for t, a, p, _ in rows},
        email={t: bool(e) for t, _, _, e in rows if e is not None},
    )
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
            "email": value.email,
            "channels": type_channels(value),
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
        email: dict[str, bool | None] | None = None,
    ) -> StoredEvent:
        """Store a user's choices (None: back to the app's default) and tell its sessions
        which types are muted now (`preferences` event on the user's stream). `email`: the
        email channel per type (a type left out keeps its choice)."""
        email = email or {}
        async with self.db.write() as conn:
            for type in sorted(set(types) | set(email)):
                where = and_(preferences.c.user_id == user, preferences.c.type == type)
                old = (
                    await conn.execute(
                        select(preferences.c.in_app, preferences.c.push, preferences.c.email).where(
                            where
                        )
                    )
                ).first()
                in_app, push = types.get(type, (old[0], old[1]) if old else (None, None))
                mail = email[type] if type in email else (old[2] if old else None)
                await conn.execute(delete(preferences).where(where))
                if in_app is not None or push is not None or mail is not None:
                    await conn.execute(
                        insert(preferences).values(
                            user_id=user, type=type, in_app=in_app, push=push, email=mail
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
