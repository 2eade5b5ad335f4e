"""`kill -9` between and during publishes loses nothing that was answered 201."""

from __future__ import annotations

import signal

import httpx
import pytest

from harness.cluster import publish_until_killed
from harness.server import Server
from harness.util import user_id


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
def test_kill_9_loses_no_acknowledged_notification(fresh_server: Server) -> None:
    server = fresh_server.start()
    users = [user_id() for _ in range(3)]
    acked = publish_until_killed(server, users)

    server.start()
    for u in users:
        want = {nid for who, nid in acked if who == u}
        seen: set[str] = set()
        cursor = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(
                server.url + "/v1/me/notifications", params=params, headers=server.me(u)
            ).json()
            seen |= {item["id"] for item in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert want <= seen, f"lost {len(want - seen)} acknowledged notifications"
        # The stream is gap-free after the crash too: replay from 0 yields 1..N.
        from clarion.streams import encode_cursor

        live = server.connect(u, encode_cursor({f"user:{u}": 0}))
        seqs = [e["seq"] for e in live.drain(0.5) if e["type"] == "notification"]
        live.close()
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= len(want)


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
def test_restart_keeps_tokens_valid_with_generated_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without a configured secret one is generated once and kept in the database."""
    server = Server(tmp_path)
    del server.env["CLARION_JWT_SECRET"]
    server.start()
    token = server.cli("token", "alice")
    h = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.url + "/v1/me/unread-count", headers=h).status_code == 200
    server.kill(signal.SIGTERM)
    server.start()
    assert httpx.get(server.url + "/v1/me/unread-count", headers=h).status_code == 200
    assert not list(tmp_path.glob("*.secret"))  # in the database, not in a file beside it
    server.kill()
