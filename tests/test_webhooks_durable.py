"""A webhook event is written in the transaction of the change it reports (docs/control.md):
an acknowledged change never loses its event, whatever happens to the node after the 200.

The node is a real `clarion serve` process. The test makes the webhook outbox refuse writes
for a moment (a trigger in the node's own database, SQLite or PostgreSQL): a change whose
event cannot be queued must not be acknowledged either. Then the node is SIGKILLed right after
an acknowledged read, restarted, and the read's webhook still arrives."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from harness.server import Server
from harness.services import node_database
from harness.util import eventually, send, user_id
from harness.webhooks import Receiver
from test_control import CONTROL_ENV, admin, api, me, unread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # two starts and a kill

REFUSE_SQLITE = """CREATE TRIGGER refuse_webhooks BEFORE INSERT ON webhook_outbox
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"""
REFUSE_POSTGRES = [
    """CREATE OR REPLACE FUNCTION refuse_webhooks() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$""",
    """CREATE TRIGGER refuse_webhooks BEFORE INSERT ON webhook_outbox
    FOR EACH ROW EXECUTE FUNCTION refuse_webhooks()""",
]


def sql(server: Server, statements: list[str]) -> None:
    """Run DDL on the node's database, beside the node."""
    url = server.env["CLARION_DATABASE_URL"]
    if url.startswith("postgres"):
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(url)
            try:
                for s in statements:
                    await conn.execute(s)
            finally:
                await conn.close()

        asyncio.run(run())
        return
    with sqlite3.connect(server.workdir / "clarion.db", timeout=10) as conn:
        for s in statements:
            conn.execute(s)


def refuse_webhooks(server: Server) -> None:
    postgres = server.env["CLARION_DATABASE_URL"].startswith("postgres")
    sql(server, REFUSE_POSTGRES if postgres else [REFUSE_SQLITE])


def allow_webhooks(server: Server) -> None:
    postgres = server.env["CLARION_DATABASE_URL"].startswith("postgres")
    on = " ON webhook_outbox" if postgres else ""
    sql(server, [f"DROP TRIGGER IF EXISTS refuse_webhooks{on}"])


def test_an_acknowledged_read_sends_its_webhook_after_a_kill_9(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=0)
    with node_database() as env:
        srv = Server(tmp_path, {**env, **CONTROL_ENV}).start()
        try:
            r = api(
                srv,
                "PUT",
                "/v1/webhooks/reads",
                admin(srv),
                json={"url": receiver.url, "events": ["notification.read"]},
            )
            assert r.status_code == 200, r.text
            receiver.secret = r.json()["secret"]
            alice = user_id()
            nid = send(srv, users=[alice], title="read me")
            refuse_webhooks(srv)
            r = me(srv, alice, "POST", f"/v1/me/notifications/{nid}/read")
            if r.status_code != 200:
                # Its event could not be queued: nor was the read (the client retries).
                assert unread(srv, alice) == 1
                allow_webhooks(srv)
                r = me(srv, alice, "POST", f"/v1/me/notifications/{nid}/read")
            assert r.status_code == 200, r.text
            receiver.fail_left = 10**6  # nothing is taken before the kill
            srv.kill(signal.SIGKILL)
            allow_webhooks(srv)
            receiver.fail_left = 0
            srv.start()
            eventually(
                lambda: receiver.events(alice) == ["notification.read"],
                timeout=30,
                what="the read's webhook after the restart",
            )
            assert receiver.bad_signatures == 0
        finally:
            srv.kill()
            receiver.close()
