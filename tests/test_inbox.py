"""The inbox API through a real node: pages, filters, exact counts, and live `state` events."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from harness.server import Live, Server
from harness.util import send, user_id

UNKNOWN_ID = "0" * 26


class Inbox:
    """One user's side of the inbox API."""

    def __init__(self, server: Server, user: str) -> None:
        self.server = server
        self.user = user
        self.client = httpx.Client(base_url=server.url, headers=server.me(user), timeout=10)

    def list(self, filter: str = "all", limit: int = 100, cursor: str | None = None) -> Any:
        params: dict[str, Any] = {"filter": filter, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = self.client.get("/v1/me/notifications", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def ids(self, filter: str = "all") -> list[str]:
        return [item["id"] for item in self.list(filter)["items"]]

    def unread(self) -> int:
        r = self.client.get("/v1/me/unread-count")
        assert r.status_code == 200, r.text
        count: int = r.json()["unread"]
        return count

    def post(self, path: str) -> httpx.Response:
        return self.client.post("/v1/me/notifications/" + path)

    def change(self, path: str) -> dict[str, Any]:
        r = self.post(path)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
def alice(server: Server) -> Inbox:
    inbox = Inbox(server, user_id())
    assert inbox.unread() == 0  # the first request: broadcasts count from here on
    return inbox


@pytest.fixture
def bob(server: Server) -> Inbox:
    inbox = Inbox(server, user_id())
    assert inbox.unread() == 0
    return inbox


def test_pages_are_newest_first_without_overlap(server: Server, alice: Inbox) -> None:
    sent = []
    for i in range(8):
        if i in (2, 5):
            sent.append(send(server, all=True, title=f"broadcast {i}"))
        else:
            sent.append(send(server, users=[alice.user], title=f"personal {i}"))
    pages, cursor = [], None
    while True:
        page = alice.list(limit=3, cursor=cursor)
        pages.append([item["id"] for item in page["items"]])
        assert page["unread"] == 8
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p] == sent[::-1]
    exact = alice.list(limit=8)
    assert exact["next_cursor"] is None and len(exact["items"]) == 8


def test_items_carry_their_state(server: Server, alice: Inbox) -> None:
    nid = send(server, users=[alice.user], title="T", body="B", type="message")
    (item,) = alice.list()["items"]
    assert item["id"] == nid and item["title"] == "T" and item["type"] == "message"
    assert item["read_at"] is None and item["archived_at"] is None and item["seen_at"] is None
    alice.change(f"{nid}/read")
    (item,) = alice.list()["items"]
    assert item["read_at"] is not None and item["archived_at"] is None


def test_filters(server: Server, alice: Inbox) -> None:
    fresh, read, archived, both = (send(server, users=[alice.user]) for _ in range(4))
    shared_read, shared_archived = (send(server, all=True) for _ in range(2))
    for path in [f"{read}/read", f"{both}/read", f"{shared_read}/read"]:
        alice.change(path)
    for path in [f"{archived}/archive", f"{both}/archive", f"{shared_archived}/archive"]:
        alice.change(path)
    assert alice.ids("all") == [shared_read, read, fresh]
    assert alice.ids("unread") == [fresh]
    assert alice.ids("archived") == [shared_archived, both, archived]
    assert alice.unread() == 1


def test_unread_count_is_exact_across_personal_and_broadcast(
    server: Server, alice: Inbox, bob: Inbox
) -> None:
    late = Inbox(server, user_id())  # no request yet: broadcasts before its first are not its
    p1 = send(server, users=[alice.user])
    b1 = send(server, all=True)
    send(server, users=[alice.user, bob.user])
    b2 = send(server, all=True)
    assert alice.unread() == 4 and alice.list("unread")["unread"] == 4
    assert bob.unread() == 3
    assert late.unread() == 0 and late.ids() == []
    assert alice.change(f"{b1}/read")["unread"] == 3
    assert alice.change(f"{p1}/read")["unread"] == 2
    assert alice.change(f"{b1}/read")["unread"] == 2, "reading twice counts once"
    assert alice.change(f"{b1}/unread")["unread"] == 3
    assert alice.change(f"{b2}/archive")["unread"] == 2
    assert alice.unread() == 2 == len(alice.ids("unread"))
    assert bob.unread() == 3, "alice's state is hers alone, also on broadcasts"
    b3 = send(server, all=True)
    assert late.ids() == [b3] and late.unread() == 1


def test_read_unread_archive_one(server: Server, alice: Inbox) -> None:
    nid = send(server, users=[alice.user])
    assert alice.change(f"{nid}/read") == {"id": nid, "change": "read", "unread": 0, "unseen": 0}
    assert alice.change(f"{nid}/unread") == {
        "id": nid,
        "change": "unread",
        "unread": 1,
        "unseen": 1,
    }
    assert alice.change(f"{nid}/archive") == {
        "id": nid,
        "change": "archived",
        "unread": 0,
        "unseen": 0,
    }
    assert alice.ids() == [] and alice.ids("archived") == [nid]


@pytest.mark.parametrize("action", ["read", "unread", "archive"])
def test_unknown_or_foreign_ids_are_404(
    server: Server, alice: Inbox, bob: Inbox, action: str
) -> None:
    mine = send(server, users=[alice.user])
    for inbox, nid in [(alice, UNKNOWN_ID), (bob, mine)]:
        r = inbox.post(f"{nid}/{action}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
    assert alice.ids("unread") == [mine] and bob.ids("all") == []
    assert alice.post(f"not-an-id/{action}").status_code == 422


def test_read_all_and_archive_all(server: Server, alice: Inbox, bob: Inbox) -> None:
    personal = [send(server, users=[alice.user, bob.user]) for _ in range(3)]
    shared = send(server, all=True)
    assert alice.unread() == 4
    assert alice.change("read-all") == {"id": None, "change": "read_all", "unread": 0, "unseen": 0}
    assert alice.ids("unread") == [] and len(alice.ids("all")) == 4
    assert all(item["read_at"] for item in alice.list()["items"])
    assert bob.unread() == 4, "bob's inbox is untouched"

    later = send(server, users=[alice.user])
    assert alice.unread() == 1, "read-all does not reach notifications sent after it"
    assert alice.change("archive-all") == {
        "id": None,
        "change": "archive_all",
        "unread": 0,
        "unseen": 0,
    }
    assert alice.ids("all") == []
    assert alice.ids("archived") == [later, shared, *personal[::-1]]
    assert bob.ids("all") == [shared, *personal[::-1]] and bob.unread() == 4


def test_changes_reach_every_tab_of_the_user_only(server: Server, alice: Inbox, bob: Inbox) -> None:
    a1, a2 = send(server, users=[alice.user]), send(server, users=[alice.user])
    shared = send(server, all=True)
    tabs = [server.connect(alice.user), server.connect(alice.user)]
    other = server.connect(bob.user)
    try:
        for tab in tabs:
            assert tab.until("unread")["count"] == 3
            assert tab.drain(0.2) == []
        other.drain(0.2)
        steps = [
            (f"{a1}/read", "read", [a1], 2),
            (f"{a1}/unread", "unread", [a1], 3),
            (f"{shared}/read", "read", [shared], 2),
            (f"{a2}/archive", "archived", [a2], 1),
            ("read-all", "read_all", [], 0),
            ("archive-all", "archive_all", [], 0),
        ]
        seqs = []
        for path, change, ids, unread in steps:
            assert alice.change(path)["unread"] == unread
            seen = [tab.recv(5) for tab in tabs]
            assert seen[0] == seen[1], "two tabs agree"
            event = seen[0]
            assert event["type"] == "state" and event["stream"] == f"user:{alice.user}"
            assert (event["change"], event["ids"], event["unread"]) == (change, ids, unread)
            assert event["at"]
            seqs.append(event["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + len(steps)))
        assert all(tab.drain(0.2) == [] for tab in tabs)
        assert [e for e in other.drain(0.3) if e["type"] == "state"] == []
    finally:
        for live in [*tabs, other]:
            live.close()


def test_a_tab_that_reconnects_gets_the_changes_it_missed(server: Server, alice: Inbox) -> None:
    nid = send(server, users=[alice.user])
    tab: Live = server.connect(alice.user)
    tab.until("unread")
    cursor = tab.cursor
    tab.close()
    alice.change(f"{nid}/read")
    alice.change("archive-all")
    back = server.connect(alice.user, cursor)
    try:
        missed = [back.recv(5), back.recv(5)]
        assert [(e["type"], e["change"]) for e in missed] == [
            ("state", "read"),
            ("state", "archive_all"),
        ]
        assert back.recv(5) == {"type": "unread", "count": 0, "unseen": 0}
    finally:
        back.close()
