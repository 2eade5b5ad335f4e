"""The publishing examples of docs/ingest.md run as written, against the real servers, with only
their queue, stream and subject names made fresh; a node consuming each source delivers the
example's notification to alice's inbox."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.server import Server
from harness.services import NATS_URL, require_service
from harness.sources import AMQP_URL, JetStream, Outbox, Rabbit, RedisStream, source
from harness.util import eventually

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "ingest.md"
COVERED = re.compile(
    r"<!-- docs-test: covered by tests/test_ingest_docs.py -->\n```python\n(.*?)^```", re.M | re.S
)
KINDS = ["outbox", "amqp", "nats", "redis"]  # the order of the examples


def examples() -> list[str]:
    found = COVERED.findall(DOC.read_text())
    assert len(found) == len(KINDS), "one example per source, in this order"
    return found


def run(code: str, env: dict[str, str], cwd: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()


def alice_titles(server: Server) -> list[str]:
    r = httpx.get(server.url + "/v1/me/notifications", headers=server.me("alice"), timeout=10)
    return [n["title"] for n in r.json()["items"]]


@pytest.mark.parametrize("kind", KINDS)
def test_the_example_publishes_through_its_source(kind: str, tmp_path: Path) -> None:
    import asyncpg

    code = examples()[KINDS.index(kind)]
    server = Server(tmp_path)
    env = dict(server.env)
    with ExampleSource(kind) as made:
        if isinstance(made, Outbox):

            async def orders() -> None:
                conn = await asyncpg.connect(made.db_url)
                await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
                await conn.execute("INSERT INTO orders VALUES (42, 'paid')")
                await conn.close()

            asyncio.run(orders())
            env["APP_DATABASE_URL"] = made.db_url.replace("postgresql://", "postgresql+asyncpg://")
        elif isinstance(made, Rabbit):
            code = code.replace('"notifications"', f'"{made.queue}"')
            env["AMQP_URL"] = AMQP_URL
        elif isinstance(made, JetStream):
            tag = made.stream.lower()
            code = code.replace('"NOTIFY"', f'"{made.stream}"').replace("notify.", f"{tag}.")
            env["NATS_URL"] = made.server
        else:
            assert isinstance(made, RedisStream)
            code = code.replace('"notifications"', f'"{made.stream}"')
            env["REDIS_URL"] = made.server
        server.start("--consume", made.consume_url(wait="0.5"))
        try:
            run(code, env, tmp_path)
            eventually(
                lambda: alice_titles(server) == ["Your order 42 has shipped"],
                timeout=30,
                what="the example's notification in alice's inbox",
            )
        finally:
            server.kill(signal.SIGTERM)


class ExampleSource:
    """The source of `kind`, as the example expects to find it: JetStream's stream is the
    example's to create, so only its name is made here (and the stream deleted after)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.inner = None if kind == "nats" else source(kind)

    def __enter__(self) -> Outbox | Rabbit | JetStream | RedisStream:
        if self.inner is not None:
            return self.inner.__enter__()
        require_service("NATS", NATS_URL)
        self.js = JetStream()
        self.js.stream = "CLDOC_" + secrets.token_hex(4).upper()
        return self.js

    def __exit__(self, *exc: object) -> None:
        if self.inner is not None:
            self.inner.__exit__(*exc)
        else:
            asyncio.run(self.js.cleanup())
