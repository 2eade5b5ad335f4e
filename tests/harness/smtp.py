"""A real SMTP server for the email tests: aiosmtpd on a free loopback port, recording what
it accepts and answering scripted replies per recipient (`451 ...`, `550 ...`) at RCPT."""

from __future__ import annotations

import asyncio
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from clarion.store.db import async_url
from harness.server import Server
from harness.util import free_port, user_id


class Mailbox:
    """Messages accepted, by recipient; scripted refusals, in turn, per recipient."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.script: dict[str, list[str]] = {}
        self.refused: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.hold_after: int | None = None  # accept this many messages, then hold the rest
        self.holding = 0  # messages whose reply is held now
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> Mailbox:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        with self.lock:
            answers = self.script.get(address)
            if answers:
                answer = answers.pop(0)
                self.refused.append((address, answer))
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        held = self.hold_after  # set from the test thread: no asyncio.Event across threads
        if held is not None and len(self.messages) >= held:
            self.holding += 1
            while held is not None and len(self.messages) >= held:
                await asyncio.sleep(0.01)  # the reply waits: the sender sent, has not heard back
                held = self.hold_after
            self.holding -= 1
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 Message accepted for delivery"


def db_url(server: Server) -> str:
    return server.env["CLARION_DATABASE_URL"]


def query(server: Server, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Read the node's database directly (what the store holds, not what the API says)."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_async_engine(async_url(db_url(server)))
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def api(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def profile(server: Server, user: str, **body: Any) -> dict[str, Any]:
    r = api(server, "PUT", f"/v1/users/{user}", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def address() -> str:
    return f"{user_id()}@example.com"


def sweep_done(server: Server, nid: str) -> bool:
    """The escalations of `nid` were swept and its emails settled (sent or dropped)."""
    left = query(
        server,
        "SELECT (SELECT count(*) FROM escalations WHERE notification_id = :n)"
        " + (SELECT count(*) FROM email_outbox WHERE notification_id = :n)",
        n=nid,
    )
    return left[0][0] == 0


def make_due(server: Server, ids: list[str]) -> None:
    """Bring these notifications' escalations due now (their due time becomes their publish
    time), so a test decides when the user has looked, not the machine's load."""

    async def run() -> None:
        engine = create_async_engine(async_url(db_url(server)))
        try:
            async with engine.begin() as conn:
                for nid in ids:
                    await conn.execute(
                        text(
                            "UPDATE escalations SET due_at = created_at WHERE notification_id = :n"
                        ),
                        {"n": nid},
                    )
        finally:
            await engine.dispose()

    asyncio.run(run())
