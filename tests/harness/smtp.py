"""A real SMTP server for the email tests: aiosmtpd on a free loopback port, recording what
it accepts and answering scripted replies per recipient (`451 ...`, `550 ...`) at RCPT."""

from __future__ import annotations

import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from harness.util import free_port


class Mailbox:
    """Messages accepted, by recipient; scripted refusals, in turn, per recipient."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.script: dict[str, list[str]] = {}
        self.refused: list[tuple[str, str]] = []
        self.lock = threading.Lock()
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
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 Message accepted for delivery"
