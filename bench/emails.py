"""The email channel and escalation, in-process against a real store and a real SMTP server.

    python bench/emails.py   (not email.py: a script's folder comes first on sys.path, and
    a bench/email.py would stand in for the standard library's `email`)

    python bench/emails.py [--emails 2000] [--followers 100000] [--database-url URL]

Figures, each beside a baseline measured in the same run (a shared machine stretches wall
clocks, ratios much less):

- publish: notifications/s to one named user each, with and without an escalation rule
  (`after: 0`), in group commits of 100; then the sweep that turns the due escalations into
  outbox rows (emails/s into the outbox);
- send: emails/s from the outbox to a local aiosmtpd (one SMTP connection per batch of 50);
- a topic with `--followers` followers (all with an address): the publish of one notification
  that escalates to them (one escalation row) against one that does not, and the due sweep
  that expands it into one outbox row per follower (seconds, rows/s);
- with `--followers` escalations pending (not due), a publish and a no-op sweep, against the
  same with none pending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from clarion.config import Settings
from clarion.domain import Draft, Escalation, Profile, utcnow
from clarion.email import Mailer
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore
from clarion.store.schema import email_outbox, escalations, follows, profiles

NOW_RULE = (Escalation(after=0),)
LATER = (Escalation(after=86400),)


class Sink:
    """An SMTP server that accepts everything and counts it."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def draft(users: list[str], shared: list[str], rules: tuple[Escalation, ...] | None) -> Draft:
    nid = new_id()
    now = utcnow()
    doc = notification_doc(nid, now.isoformat(), type="bench", priority="normal", title="Hi")
    return Draft(nid, "bench", "normal", doc, now, users=users, shared=shared, escalate=rules)


async def timed(job: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await job()
    return time.perf_counter() - started


async def count(store: SQLStore, table: Any) -> int:
    async with store.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def run(url: str, emails: int, followers: int) -> dict[str, float]:
    store = SQLStore(url)
    await store.connect()
    sink = Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    out: dict[str, float] = {}
    try:
        users = [f"b{i}" for i in range(emails)]
        for i in range(0, emails, 500):
            await store.put_profiles(
                [Profile(u, email=f"{u}@example.com") for u in users[i : i + 500]]
            )

        async def publish(rules: tuple[Escalation, ...] | None) -> None:
            for i in range(0, emails, 100):
                await store.publish([draft([u], [], rules) for u in users[i : i + 100]])

        await publish(())  # warm-up: connections, caches, the first pages of the tables
        base, esc = [], []
        for _ in range(2):  # interleaved, so drift on a shared machine hits both alike
            base.append(await timed(lambda: publish(())))
            esc.append(await timed(lambda: publish(NOW_RULE)))
        out["publish/s, no escalation"] = emails / min(base)
        out["publish/s, escalation"] = emails / min(esc)

        async def sweep_all() -> None:
            while await store.sweep(utcnow(), 5.0, limit=100):
                pass

        took = await timed(sweep_all)
        queued = await count(store, email_outbox)
        out["emails/s into the outbox (sweep)"] = queued / took
        settings = Settings(smtp_url=f"smtp://127.0.0.1:{port}", email_timeout=30)
        mailer = Mailer(store, settings)
        await mailer.start()

        async def send_all() -> None:
            while await mailer.flush():
                pass

        took = await timed(send_all)
        out["emails/s sent to aiosmtpd"] = sink.count / took
        out["emails sent"] = sink.count

        # A topic with `followers` followers, each with an address.
        stream = "topic:bench-fans"
        fans = [f"f{i}" for i in range(followers)]
        now = utcnow()
        async with store.db.write() as conn:
            for i in range(0, followers, 5000):
                chunk = fans[i : i + 5000]
                await conn.execute(
                    insert(profiles),
                    [{"user_id": u, "email": f"{u}@example.com", "updated_at": now} for u in chunk],
                )
                await conn.execute(
                    insert(follows),
                    [
                        {"user_id": u, "stream": stream, "since_seq": 0, "created_at": now}
                        for u in chunk
                    ],
                )
        plain = [await timed(lambda: store.publish([draft([], [stream], ())])) for _ in range(20)]
        with_rule = [
            await timed(lambda: store.publish([draft([], [stream], LATER)])) for _ in range(20)
        ]
        await store.publish([draft([], [stream], NOW_RULE)])  # the one that comes due
        out[f"topic publish ms, {followers} followers, no escalation (median of 20)"] = (
            statistics.median(plain) * 1000
        )
        out[f"topic publish ms, {followers} followers, escalation (median of 20)"] = (
            statistics.median(with_rule) * 1000
        )
        async with store.db.write() as conn:
            await conn.execute(email_outbox.delete())
        took = await timed(sweep_all)
        expanded = await count(store, email_outbox)
        out[f"due sweep s, {followers} followers -> outbox rows"] = took
        out["due sweep outbox rows"] = expanded
        out["due sweep rows/s"] = expanded / took

        async with store.db.write() as conn:
            await conn.execute(escalations.delete())  # the 20 not due
        # `followers` escalations pending (not due): publish and no-op sweep costs.
        quiet_pub = [
            await timed(lambda: store.publish([draft([users[0]], [], LATER)])) for _ in range(50)
        ]
        quiet_sweep = [await timed(lambda: store.sweep(utcnow(), 5.0)) for _ in range(50)]
        later = utcnow()
        async with store.db.write() as conn:
            for i in range(0, followers, 5000):
                await conn.execute(
                    insert(escalations),
                    [
                        {
                            "notification_id": f"P{j:025d}",
                            "rule": 0,
                            "channel": "email",
                            "unless": "seen",
                            "offline": False,
                            "due_at": later + timedelta(days=1),
                            "created_at": later,
                        }
                        for j in range(i, min(followers, i + 5000))
                    ],
                )
        busy_pub = [
            await timed(lambda: store.publish([draft([users[0]], [], LATER)])) for _ in range(50)
        ]
        busy_plain = [
            await timed(lambda: store.publish([draft([users[0]], [], ())])) for _ in range(50)
        ]
        busy_sweep = [await timed(lambda: store.sweep(utcnow(), 5.0)) for _ in range(50)]
        out["publish ms, 0 pending + 1 rule (median of 50)"] = statistics.median(quiet_pub) * 1000
        out[f"publish ms, {followers} pending + 1 rule (median of 50)"] = (
            statistics.median(busy_pub) * 1000
        )
        out[f"publish ms, {followers} pending, no rule (median of 50)"] = (
            statistics.median(busy_plain) * 1000
        )
        out["no-op sweep ms, 0 pending (median of 50)"] = statistics.median(quiet_sweep) * 1000
        out[f"no-op sweep ms, {followers} pending (median of 50)"] = (
            statistics.median(busy_sweep) * 1000
        )
    finally:
        controller.stop()
        await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--followers", type=int, default=100_000)
    parser.add_argument("--database-url", default=os.environ.get("CLARION_BENCH_DATABASE"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        label = url.split("@")[-1] if "@" in url else "sqlite"
        results = asyncio.run(run(url, args.emails, args.followers))
    print(f"# bench/emails.py on {label}: --emails {args.emails} --followers {args.followers}")
    for name, value in results.items():
        print(f"{name:70s} {value:12.1f}")


if __name__ == "__main__":
    main()
