"""Consumers through failures, on the real servers: a node SIGKILLed mid-drain, two nodes on one
source, the broker or the app's database going away mid-stream, the store answering 503.
Each ends with every message in the inbox exactly once, in order per stream."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from harness.proxy import Proxy
from harness.server import Server
from harness.services import PrivateService, postgres_database
from harness.sources import (
    KINDS,
    JetStream,
    Outbox,
    Rabbit,
    RedisStream,
    Source,
    metric,
    source,
)
from harness.util import eventually, user_id

pytestmark = pytest.mark.slow


@pytest.fixture(params=KINDS)
def src(request: pytest.FixtureRequest) -> Iterator[Source]:
    with source(request.param) as made:
        yield made


def messages(users: list[str], count: int, first: int = 0) -> list[Any]:
    """`count` bodies spread over `users`, numbered in `data.n` in the order they are sent."""
    return [
        ({"users": [users[n % len(users)]], "title": f"n{n}", "data": {"n": n}}, f"m{n}")
        for n in range(first, first + count)
    ]


def rows(stored: list[tuple[str, int, bytes]]) -> dict[str, list[int]]:
    """Stream -> the `data.n` of its notifications, in seq order (seqs checked gap-free)."""
    out: dict[str, list[int]] = {}
    for stream, seq, payload in sorted(stored):
        ns = out.setdefault(stream, [])
        assert seq == len(ns) + 1, f"{stream}: seq {seq} after {len(ns)}"
        ns.append(orjson.loads(payload)["notification"]["data"]["n"])
    return out


QUERY = "SELECT stream, seq, payload FROM events WHERE kind = 'notification'"


def sqlite_rows(server: Server) -> dict[str, list[int]]:
    with sqlite3.connect(server.workdir / "clarion.db") as db:
        return rows(db.execute(QUERY).fetchall())


def stored(server: Server) -> int:
    with sqlite3.connect(server.workdir / "clarion.db") as db:
        count = db.execute("SELECT count(*) FROM events WHERE kind = 'notification'")
        return int(count.fetchone()[0])


def postgres_rows(url: str) -> dict[str, list[int]]:
    import asyncpg

    async def read() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(QUERY)]
        finally:
            await conn.close()

    return rows(asyncio.run(read()))


def assert_exactly_once_in_order(got: dict[str, list[int]], users: list[str], total: int) -> None:
    for i, user in enumerate(users):
        want = list(range(i, total, len(users)))
        ns = got.get(f"user:{user}", [])
        assert len(ns) == len(set(ns)), f"{user}: duplicates"
        assert ns == want, f"{user}: {len(ns)} of {len(want)}, or out of order"


def consume_args(src: Source, **params: str) -> str:
    extra = {"redis": {"consumer": "node1"}, "nats": {"ack_wait": "2"}}.get(src.kind, {})
    return src.consume_url(**{**extra, **params})


def test_a_node_killed_mid_drain_loses_and_doubles_nothing(src: Source, tmp_path: Path) -> None:
    users = [user_id() for _ in range(5)]
    total = 10_000
    server = Server(tmp_path)
    # Batches of 200: a drain of 50 transactions, to be killed in the middle of.
    server.start("--consume", consume_args(src, batch="200"))
    try:
        asyncio.run(src.send(messages(users, total)))
        eventually(lambda: stored(server) >= 1000, timeout=60, interval=0.005)
        server.kill(signal.SIGKILL)  # mid-drain: a batch committed and not acked, likely
        drained = sum(len(ns) for ns in sqlite_rows(server).values())
        assert 0 < drained < total, "kill earlier: the drain was over"
        server.start("--consume", consume_args(src, batch="200"))
        eventually(
            lambda: stored(server) >= total,
            timeout=120,
            what="the drain to finish",
        )
        eventually(lambda: metric(server, "clarion_ingest_lag") == 0, timeout=30, what="lag 0")
        assert_exactly_once_in_order(sqlite_rows(server), users, total)
    finally:
        server.kill(signal.SIGTERM)


def test_two_nodes_on_one_source_split_the_work_and_double_nothing(
    src: Source, tmp_path: Path
) -> None:
    users = [user_id() for _ in range(4)]
    total = 3000
    with postgres_database() as store:
        env = {"CLARION_DATABASE_URL": store}
        url = src.consume_url(batch="100")  # each node its own Redis consumer (host-pid)
        nodes = [Server(tmp_path / str(i), env) for i in range(2)]
        for node in nodes:
            node.workdir.mkdir()
            node.start("--consume", url)
        try:
            asyncio.run(src.send(messages(users, total)))
            eventually(
                lambda: sum(len(ns) for ns in postgres_rows(store).values()) >= total,
                timeout=120,
                what="the drain to finish",
            )
            consumed = [metric(node, "clarion_ingest_consumed") for node in nodes]
            assert all(c > 0 for c in consumed), f"one node did all the work: {consumed}"
            assert sum(consumed) == total, consumed
            got = postgres_rows(store)
            for user in users:  # exactly once; order across two nodes is not promised
                ns = got[f"user:{user}"]
                assert sorted(ns) == list(range(users.index(user), total, len(users)))
        finally:
            for node in nodes:
                node.kill(signal.SIGTERM)


@pytest.mark.parametrize("kind", KINDS)
def test_the_broker_or_app_database_restarted_mid_stream_is_survived(
    kind: str, tmp_path: Path
) -> None:
    """A private redis-server (append-only file) or JetStream nats-server is SIGKILLed and
    restarted; RabbitMQ and the app's PostgreSQL are cut off behind a relay and restored."""
    users = [user_id() for _ in range(3)]
    with _restartable(kind, tmp_path) as (made, url, outage):
        server = Server(tmp_path).start("--consume", url)
        try:
            asyncio.run(made.send(messages(users, 300)))
            eventually(lambda: metric(server, "clarion_ingest_consumed") == 300, timeout=60)
            with outage():
                pass
            asyncio.run(made.send(messages(users, 300, first=300)))
            eventually(
                lambda: sum(len(ns) for ns in sqlite_rows(server).values()) >= 600,
                timeout=90,
                what="the rest after the outage",
            )
            assert_exactly_once_in_order(sqlite_rows(server), users, 600)
            assert "reconnecting" in server.log(), "the consumer never lost its source"
        finally:
            server.kill(signal.SIGTERM)


def _via(url: str, proxy: Proxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


class _restartable:
    """A source of `kind` whose server can go away and come back: `outage()` is the gap."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir = kind, workdir

    def __enter__(self) -> tuple[Source, str, Any]:
        import contextlib

        self.stack = contextlib.ExitStack()
        kind = self.kind
        if kind in ("redis", "nats"):
            service = PrivateService(kind, self.workdir)
            if kind == "redis":
                at = service.argv.index("--appendonly") + 1  # kept across the SIGKILL
                service.argv[at : at + 1] = ["yes", "--appendfsync", "always"]
            else:
                service.argv += ["-js", "-sd", str(self.workdir / "js")]
            service.start()
            self.stack.callback(service.kill)
            made: Source = RedisStream(service.url) if kind == "redis" else JetStream(service.url)
            asyncio.run(made.setup())
            extra = {"consumer": "node1"} if kind == "redis" else {"ack_wait": "2"}
            url = made.consume_url(**extra)

            @contextlib.contextmanager
            def outage() -> Iterator[None]:
                service.kill()
                service.start()
                yield

            return made, url, outage
        made = self.stack.enter_context(source(kind))
        assert isinstance(made, Outbox | Rabbit)
        target = made.db_url if isinstance(made, Outbox) else "amqp://guest:guest@127.0.0.1:5672/"
        parts = urlsplit(target)
        proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672))
        proxy.start()
        self.stack.callback(proxy.cut)
        url = made.consume_url(_via(target, proxy))

        @contextlib.contextmanager
        def cut() -> Iterator[None]:
            proxy.cut()
            yield
            proxy.start()

        return made, url, cut

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def test_consumption_pauses_while_the_store_is_down_and_resumes(tmp_path: Path) -> None:
    users = [user_id() for _ in range(2)]
    with postgres_database() as store, source("redis") as made:
        parts = urlsplit(store)
        proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        proxy.start()
        server = Server(tmp_path, {"CLARION_DATABASE_URL": _via(store, proxy)})
        server.start("--consume", made.consume_url(consumer="node1"))
        try:
            asyncio.run(made.send(messages(users, 100)))
            eventually(lambda: metric(server, "clarion_ingest_consumed") == 100, timeout=60)
            proxy.cut()
            asyncio.run(made.send(messages(users, 100, first=100)))
            eventually(lambda: metric(server, "clarion_ingest_paused") == 1, timeout=60)
            assert metric(server, "clarion_ingest_consumed") == 100, "nothing acked while down"
            assert metric(server, "clarion_ingest_failed") > 0
            proxy.start()
            eventually(lambda: metric(server, "clarion_ingest_consumed") == 200, timeout=60)
            assert metric(server, "clarion_ingest_paused") == 0
            assert_exactly_once_in_order(postgres_rows(store), users, 200)
        finally:
            server.kill(signal.SIGTERM)
            proxy.cut()
