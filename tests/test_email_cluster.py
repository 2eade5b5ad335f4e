"""Escalation across nodes and crashes (slow: several `clarion serve` processes on one
PostgreSQL database, one real SMTP server).

- Seen on one node, published on another: no email.
- A node killed with SIGKILL while escalations are due: each user is emailed exactly once
  (the sweep's delete and the outbox rows commit together; the other node, or the restarted
  one, takes what is left).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clarion.email import CONNECTIONS
from harness.cluster import start_nodes, stop_nodes
from harness.server import Server
from harness.services import postgres_database
from harness.smtp import Mailbox, address, make_due, profile, query, sweep_done
from harness.util import eventually, send, user_id

pytestmark = pytest.mark.slow


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
def nodes(tmp_path: Path, mailbox: Mailbox) -> Iterator[list[Server]]:
    with postgres_database() as url:
        env = {
            "CLARION_DATABASE_URL": url,
            "CLARION_SMTP_URL": mailbox.url,
            "CLARION_EMAIL_INTERVAL": "0.05",
            "CLARION_EMAIL_RETRY_SECONDS": "0.2",
            "CLARION_ONLINE_INTERVAL": "0.2",
            "CLARION_EMAIL_TIMEOUT": "2",  # a lease of 4 s on what a killed node claimed
        }
        both = start_nodes(tmp_path, 2, env)
        yield both
        stop_nodes(both)


def test_seen_on_another_node_cancels_the_email(nodes: list[Server], mailbox: Mailbox) -> None:
    a, b = nodes
    looker, away = user_id(), user_id()
    looker_to, away_to = address(), address()
    profile(a, looker, email=looker_to)
    profile(a, away, email=away_to)
    later = [{"after": 3600, "unless": "seen"}]
    seen_id = send(a, users=[looker], escalate=later)
    away_id = send(a, users=[away], escalate=later)
    r = httpx.post(
        f"{b.url}/v1/me/notifications/seen", json={"ids": [seen_id]}, headers=b.me(looker)
    )
    assert r.status_code == 200, r.text
    make_due(a, [seen_id, away_id])
    eventually(lambda: mailbox.to(away_to), what="the email of the user who did not look")
    eventually(lambda: sweep_done(a, seen_id) and sweep_done(a, away_id), what="the sweep")
    assert mailbox.to(looker_to) == []


def test_sigkill_while_escalations_are_due_emails_each_user_once(
    nodes: list[Server], mailbox: Mailbox
) -> None:
    a, b = nodes
    users = {user_id(): address() for _ in range(20)}
    batch = [
        {"users": [{"id": u, "email": to}], "title": "due", "escalate": [{"after": 1}]}
        for u, to in users.items()
    ]
    r = httpx.post(
        f"{a.url}/v1/notifications/batch",
        json={"notifications": batch},
        headers={"Authorization": f"Bearer {a.api_key}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    ids = [item["result"]["id"] for item in r.json()["results"]]
    eventually(lambda: mailbox.messages, what="the first email", interval=0.005)
    a.kill(signal.SIGKILL)  # while the rest of them are due and being swept
    eventually(lambda: all(mailbox.to(to) for to in users.values()), timeout=30, what="all")
    a.start()  # the killed node comes back; nothing of its work is done twice
    eventually(lambda: all(sweep_done(b, n) for n in ids), timeout=30, what="all settled")
    ids_per_user = {to: {m["Message-ID"] for m in mailbox.to(to)} for to in users.values()}
    assert all(len(v) == 1 for v in ids_per_user.values()), ids_per_user
    deliveries = Counter(str(m["To"]) for m in mailbox.messages)
    # SMTP itself is at least once: a node killed between the server's 250 and its own
    # commit resends, with the same Message-ID. What it can resend is bounded: one message in
    # flight per connection and the replies that came while a commit was under way
    # (test_email.py checks replies are committed mid-batch). The sweep is exactly once.
    assert sum(deliveries.values()) - len(users) <= 2 * CONNECTIONS, deliveries
    assert query(b, "SELECT count(*) FROM escalations") == [(0,)]
    assert send(a, users=[user_id()])  # the restarted node serves
