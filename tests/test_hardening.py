"""Issue #13: what an attacker found, each kept fixed through a real server."""

from __future__ import annotations

import secrets
import socket
import time

import httpx
import psutil
import pytest

from conftest import Server, user_id
from test_push import ENV as PUSH_ENV
from test_push import Browser, PushService, db, outbox_empty, publish, subscribed, wait_until

# -- unauthenticated clients cost nothing: request heads and API keys ------------------------


def _raw(server: Server, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes on a fresh connection; what the server answers before closing (or timeout)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_oversized_headers_are_431(server: Server) -> None:
    huge = {"Authorization": "Bearer " + "a" * (4 << 20)}
    r = httpx.post(server.url + "/v1/notifications", json={"all": True, "title": "x"}, headers=huge)
    assert r.status_code == 431, r.text
    assert r.json()["error"]["code"] == "headers_too_large"
    many = {f"x-h{i}": "1" for i in range(150)}
    assert httpx.get(server.url + "/healthz", headers=many).status_code == 431
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_head_that_never_ends_is_refused_as_it_grows(server: Server) -> None:
    """Streamed without its final CRLF, the head is refused once over the limit, not held."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/me/unread-count HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        answer = b""
        for _ in range(40):
            try:
                sock.sendall(b"a" * 4096)
            except OSError:  # closed by the server after its answer
                break
        sock.settimeout(5)
        with_timeout = time.monotonic() + 5
        while time.monotonic() < with_timeout:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_unknown_api_keys_are_not_remembered(fresh_server: Server) -> None:
    """Every bearer string used to be cached, valid or not: 20 KB each, never released."""
    server = fresh_server.start()
    proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]

    def forged(n: int) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(n):
                bad = f"clk_{secrets.token_hex(8)}_{'x' * 43}" + "y" * 20_000
                r = client.post(
                    server.url + "/v1/notifications",
                    json={"all": True, "title": "x"},
                    headers={"Authorization": f"Bearer {bad}"},
                )
                assert r.status_code == 401

    forged(100)  # the allocator's arenas warm up
    before = proc.memory_info().rss
    forged(600)  # 12 MB of secrets if each were kept
    grown = proc.memory_info().rss - before
    assert grown < 4 << 20, f"RSS grew {grown >> 10} KiB for 600 refused keys"
    ok = httpx.post(
        server.url + "/v1/notifications",
        json={"all": True, "title": "x"},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert ok.status_code == 201


# -- Web Push endpoints reach only the public internet ---------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "0x7f.0.0.1",
        "127.0.0.0x1",
        "2130706433",
        "017700000001",
        "localhost.",
        "push.example.com.",
        "metadata.google.internal",
        "instance-data.ec2.internal",
        "printer.local",
        "169.254.169.254",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
    ],
)
def test_private_push_endpoints_are_refused_in_any_spelling(server: Server, host: str) -> None:
    browser = Browser(f"https://{host}/push/abc")
    r = httpx.post(
        server.url + "/v1/me/push-subscriptions",
        json=browser.subscription(),
        headers=server.me(user_id()),
    )
    assert r.status_code == 422, (host, r.text)
    assert r.json()["error"]["field"] == "endpoint"


def test_push_checks_the_address_it_connects_to(fresh_server: Server) -> None:
    """An endpoint that leads inside (registered when it did not, or rebound since) is never
    sent to: the sender checks the resolved address, then drops the subscription."""
    service = PushService()
    try:
        fresh_server.env.update(PUSH_ENV)
        server = fresh_server.start()
        user, browser = subscribed(server, service)
        publish(server, user)
        service.wait(browser)  # the loopback stand-in is allowed: it works
        server.kill()
        server.env["CLARION_PUSH_ALLOW_HTTP_LOOPBACK"] = "0"
        server.start()
        publish(server, user)
        wait_until(
            lambda: not db(server, "SELECT 1 FROM push_subscriptions"), "the subscription goes"
        )
        outbox_empty(server)
        assert len(service.to(browser)) == 1, "the sender connected to 127.0.0.1"
    finally:
        service.close()
