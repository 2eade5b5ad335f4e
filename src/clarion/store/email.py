"""The email outbox in the store: claim due rows with a lease, settle the outcomes.

Rows are written by the escalation sweep (store/escalations.py) in the transaction that
removes the escalation. A sender claims due rows by moving their `due_at` a lease ahead (on
PostgreSQL `FOR UPDATE SKIP LOCKED`, so nodes take different rows), sends without holding a
lock, and settles replies in transactions that also write the delivery log's `email` rows and
the webhook events they cause: sent rows go, retries come due later, a permanent refusal marks
the address bad. A sender that dies mid-send leaves its rows to come due again
when the lease ends: at least once, with a stable `Message-ID` for the receiving side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson
from sqlalchemy import delete, select, tuple_, update

from clarion.domain import Profile, utcnow
from clarion.store.db import Database
from clarion.store.deliveries import record
from clarion.store.outbox import any_due, lease_due
from clarion.store.profiles import mark_bad, profile_of
from clarion.store.schema import email_outbox, notifications, profiles
from clarion.store.webhooks import NO_HOOKS, Event, Hooks, queue_in

Key = tuple[str, str]  # (notification id, user id)


@dataclass(slots=True)
class DueEmail:
    notification_id: str
    user_id: str
    attempts: int  # this send included
    doc: dict[str, object] | None  # None: the notification is gone
    profile: Profile | None  # None: the user is gone (erased)

    @property
    def key(self) -> Key:
        return (self.notification_id, self.user_id)


@dataclass(slots=True)
class EmailOutcome:
    done: list[Key]  # sent, or dropped for good
    later: list[tuple[Key, datetime]]  # retries
    bad: list[Key]  # refused for good: the row goes and the address is marked bad
    # The delivery log's rows: (notification id, user, "emailed" | "failed" | "recalled", why).
    logged: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    bounced: list[tuple[str, str, int, str]] = field(default_factory=list)  # (id, user, code, why)

    def __bool__(self) -> bool:
        return bool(self.done or self.later or self.bad)

    @property
    def events(self) -> list[Event]:
        """`delivery.failed` for each email given up or refused, `email.bounced` for each
        permanent refusal: queued with the outcome, in its transaction."""
        failed = [
            Event("delivery.failed", u, {"id": n, "user": u, "channel": "email", "reason": why}, n)
            for n, u, state, why in self.logged
            if state == "failed"
        ]
        bounced = [
            Event("email.bounced", u, {"id": n, "user": u, "code": code, "reason": why}, n)
            for n, u, code, why in self.bounced
        ]
        return failed + bounced


class EmailOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, now: datetime, limit: int, lease: float) -> list[DueEmail]:
        if not await any_due(self.db, email_outbox, now):
            return []
        async with self.db.write() as conn:
            key = [email_outbox.c.notification_id, email_outbox.c.user_id]
            mine = await lease_due(self.db, conn, email_outbox, key, now, limit, lease)
            if mine is None:
                return []
            o, n, p = email_outbox, notifications, profiles
            rows = await conn.execute(
                select(o.c.notification_id, o.c.user_id, o.c.attempts, n.c.doc, p)
                .select_from(
                    o.outerjoin(n, n.c.id == o.c.notification_id).outerjoin(
                        p, p.c.user_id == o.c.user_id
                    )
                )
                .where(mine)
            )
            out = []
            for r in rows.all():
                profile = profile_of(r) if r.updated_at is not None else None
                doc = orjson.loads(r.doc) if r.doc is not None else None
                out.append(DueEmail(r.notification_id, r[1], r.attempts, doc, profile))
            return out

    async def settle(
        self, outcome: EmailOutcome, hooks: Hooks = NO_HOOKS, now: datetime | None = None
    ) -> None:
        """Apply replies: sent rows go, retries come due later, a permanent refusal marks the
        address bad; in the same transaction the delivery log's `email` rows and the
        `delivery.failed` / `email.bounced` webhook events (at least once, like the change)."""
        key = tuple_(email_outbox.c.notification_id, email_outbox.c.user_id)
        now = now or utcnow()
        async with self.db.write() as conn:
            if outcome.logged:
                rows = [(n, u, "email", st, now, why) for n, u, st, why in outcome.logged]
                await record(self.db, conn, rows)
            if events := outcome.events:
                await self.db.run(conn, lambda c: queue_in(c, hooks, events, now))
            gone = outcome.done + outcome.bad
            if gone:
                await conn.execute(delete(email_outbox).where(key.in_(gone)))
            for (nid, user), when in outcome.later:
                await conn.execute(
                    update(email_outbox)
                    .where(email_outbox.c.notification_id == nid, email_outbox.c.user_id == user)
                    .values(due_at=when)
                )
            await mark_bad(conn, sorted({u for _, u in outcome.bad}))
