"""Publisher API keys (stored only as a hash) and single-use connection tickets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update

from clarion.domain import ApiKey, utcnow
from clarion.store.db import Database, aware
from clarion.store.schema import api_keys, tickets

KEY_PREFIX = "clk_"
LAST_USED_EVERY = timedelta(minutes=1)  # how stale `last_used_at` may be
KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scope,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """API keys and tickets."""

    db: Database

    async def create_key(
        self, name: str, scope: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, scope, utcnow(), expires_at)
        async with self.db.write() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    scope=scope,
                    hash=_hash(secret),
                    created_at=key.created_at,
                    expires_at=expires_at,
                )
            )
        return key, secret

    async def list_keys(self) -> list[ApiKey]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(*KEY_COLUMNS).order_by(api_keys.c.created_at))).all()
        return [ApiKey(*row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def verify_key(self, secret: str) -> ApiKey | None:
        """The key for a secret, if it is valid now. Compared in constant time."""
        if not secret.startswith(KEY_PREFIX) or secret.count("_") < 2:
            return None
        key_id = secret[len(KEY_PREFIX) :].split("_", 1)[0]
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*KEY_COLUMNS, api_keys.c.hash).where(api_keys.c.id == key_id)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.hash, _hash(secret)):
            return None
        key = ApiKey(*row[:7])
        if key.revoked_at is not None:
            return None
        now = utcnow()
        if key.expires_at is not None and aware(key.expires_at) <= now:
            return None
        if key.last_used_at is None or aware(key.last_used_at) < now - LAST_USED_EVERY:
            async with self.db.write() as conn:  # once a minute at most: a write is not free
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key.id).values(last_used_at=now)
                )
            key.last_used_at = now
        return key

    # -- tickets ------------------------------------------------------------------------------

    async def create_ticket(self, user: str, claims: dict[str, Any], ttl: float) -> str:
        ticket = secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.write() as conn:
            await conn.execute(delete(tickets).where(tickets.c.expires_at < now))
            await conn.execute(
                insert(tickets).values(
                    id=ticket,
                    user_id=user,
                    claims=orjson.dumps(claims),
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        return ticket

    async def consume_ticket(self, ticket: str) -> dict[str, Any] | None:
        """Single use: the DELETE that finds the row is the one that may use it."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    delete(tickets)
                    .where(tickets.c.id == ticket)
                    .returning(tickets.c.claims, tickets.c.expires_at)
                )
            ).first()
        if row is None or aware(row.expires_at) <= utcnow():
            return None
        claims: dict[str, Any] = orjson.loads(row.claims)
        return claims
