"""Behind a real nginx: the configuration documented in docs/deployment.md, run as it is by
Debian's nginx (a private process: its own prefix, config, pid file and logs in a temp dir, on a
free loopback port) in front of two nodes on PostgreSQL and Redis. WebSocket, SSE (an event
arrives while the stream is open: nothing buffers it) and long-polling all pass through it.

Needs nginx (`scripts/ensure-nginx`, run by `make test`), PostgreSQL and Redis: skipped without
them, failed without them in CI.
"""

from __future__ import annotations

import copy
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from harness.cluster import start_nodes, stop_nodes
from harness.server import Server
from harness.services import IN_CI, REDIS_URL, postgres_database, require_service
from harness.util import free_port, user_id

pytestmark = pytest.mark.slow  # nginx and three nodes a module: make test-slow


DOC = Path(__file__).parents[1] / "docs" / "deployment.md"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def documented_config(upstreams: list[int], port: int) -> str:
    """The nginx block of docs/deployment.md with only the node addresses and `listen` swapped."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/deployment.md should hold one nginx configuration"
    text = blocks[0]
    swaps = {
        "    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n": "".join(
            f"    server 127.0.0.1:{p};\n" for p in upstreams
        ),
        "listen 443 ssl;": f"listen 127.0.0.1:{port};",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"the documented config no longer has {old!r}"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx -p DIR -c DIR/nginx.conf -g 'daemon off;', stopped by its pid."""

    def __init__(self, workdir: Path, site: str) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            reason = "nginx is not installed (scripts/ensure-nginx installs it)"
            if IN_CI:
                pytest.fail(f"{reason}; CI must provide it", pytrace=False)
            pytest.skip(reason)
        self.workdir = workdir
        for name in TEMP_DIRS:
            (workdir / name).mkdir(parents=True, exist_ok=True)
        temp = "".join(f"    {name}_temp_path {workdir / name};\n" for name in TEMP_DIRS)
        # As root, nginx's workers would run as `nobody`, who cannot enter pytest's temp dirs.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {workdir / 'nginx.pid'};\n"
            f"error_log {workdir / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log {workdir / 'access.log'};\n{temp}{site}\n}}\n"
        )
        self.argv = [binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")]
        check = subprocess.run([*self.argv, "-t"], capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [*self.argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, (self.workdir / "error.log").read_text()
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # fast shutdown; its workers leave with it
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[Server]]]:
    """Two nodes, and a `Server` handle whose address is nginx's."""
    require_service("Redis", REDIS_URL)
    base = tmp_path_factory.mktemp("proxy")
    with postgres_database() as db:
        broker = f"{REDIS_URL}?namespace=p{secrets.token_hex(4)}"
        port = free_port()
        nginx = None
        nodes = start_nodes(base, 2, {"CLARION_DATABASE_URL": db, "CLARION_BROKER_URL": broker})
        try:
            nginx = Nginx(base / "nginx", documented_config([n.port for n in nodes], port))
            nginx.start(port)
            front = copy.copy(nodes[0])
            front.port = port
            yield front, nodes
        finally:
            if nginx:
                nginx.stop()
            stop_nodes(nodes)


def _published(node: Server) -> float:
    text = httpx.get(node.url + "/metrics").text
    return float(re.search(r"^clarion_published_total (\S+)", text, re.M).group(1))  # type: ignore[union-attr]


def test_websocket_through_nginx(proxied: tuple[Server, list[Server]]) -> None:
    front, nodes = proxied
    u = user_id()
    before = [_published(n) for n in nodes]
    tab = front.connect(u)  # nginx's address
    try:
        tab.until("unread")
        ids = []
        for i in range(4):  # round-robin: the publishes land on both nodes
            r = front.publish(users=[u], title=f"via nginx {i}")
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            event = tab.until("notification", timeout=5)
            assert (event["notification"]["id"], event["seq"]) == (ids[-1], i + 1)
        assert all(_published(n) > b for n, b in zip(nodes, before, strict=True))
        read = httpx.post(f"{front.url}/v1/me/notifications/read-all", headers=front.me(u))
        assert read.status_code == 200, read.text
        assert tab.until("state", timeout=5)["unread"] == 0
    finally:
        tab.close()


def _sse_lines(url: str, headers: dict[str, str], out: queue.Queue[Any]) -> None:
    try:
        with httpx.stream("GET", url, headers=headers, timeout=30) as resp:
            out.put(("status", resp.status_code, resp.headers.get("content-type")))
            for line in resp.iter_lines():
                out.put(("line", line))
    except httpx.HTTPError as exc:
        out.put(("error", repr(exc)))


def test_sse_through_nginx_is_not_buffered(proxied: tuple[Server, list[Server]]) -> None:
    front, _ = proxied
    u = user_id()
    lines: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(
        target=_sse_lines, args=(front.url + "/v1/sse", front.me(u), lines), daemon=True
    )
    reader.start()
    status = lines.get(timeout=10)
    assert status[:2] == ("status", 200) and status[2].startswith("text/event-stream"), status

    def next_data(kind: str) -> dict[str, Any]:
        # Bounded by the 15 s SSE ping: an event held in a buffer would surface with it, later.
        deadline = time.monotonic() + 5
        while True:
            item = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if item[0] == "line" and item[1].startswith("data:"):
                event: dict[str, Any] = orjson.loads(item[1][5:])
                if event["type"] == kind:
                    return event

    next_data("unread")  # the stream is live
    for i in range(3):
        r = front.publish(users=[u], title=f"sse {i}")
        assert r.status_code == 201, r.text
        assert next_data("notification")["notification"]["id"] == r.json()["id"]


def test_long_poll_through_nginx(proxied: tuple[Server, list[Server]]) -> None:
    front, _ = proxied
    u = user_id()
    h = front.me(u)
    first = httpx.get(front.url + "/v1/poll", headers=h, timeout=10)
    assert first.status_code == 200, first.text
    cursor = first.json()["cursor"]
    for i in range(3):
        answer: dict[str, Any] = {}

        def poll(since: str = cursor, answer: dict[str, Any] = answer) -> None:
            answer["r"] = httpx.get(
                front.url + "/v1/poll",
                params={"since": since, "timeout": 20},
                headers=h,
                timeout=30,
            )

        waiting = threading.Thread(target=poll)
        waiting.start()
        time.sleep(0.3)  # the poll is parked on a node
        assert waiting.is_alive(), "the long-poll answered before anything happened"
        r = front.publish(users=[u], title=f"poll {i}")
        assert r.status_code == 201, r.text
        waiting.join(timeout=15)
        assert not waiting.is_alive(), "the long-poll was not answered"
        body = answer["r"].json()
        assert [e["notification"]["id"] for e in body["events"]] == [r.json()["id"]]
        cursor = body["cursor"]
