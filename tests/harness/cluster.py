"""Whole clusters and traffic: several nodes on one database and broker, tabs that follow a
user across nodes, publishers that keep publishing while nodes die, and the exactly-once check."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from harness.server import Live, Server
from harness.util import eventually


def publish_until_killed(
    server: Server, users: list[str], want: int = 150
) -> list[tuple[str, str]]:
    """Four publishers round-robin over `users`; once `want` are acknowledged the server gets
    SIGKILL mid-traffic. Returns the (user, id) pairs that were answered 201."""
    acked: list[tuple[str, str]] = []
    stop = threading.Event()

    def publisher(n: int) -> None:
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                u = users[(n + i) % len(users)]
                try:
                    r = client.post(
                        server.url + "/v1/notifications",
                        json={"users": [u], "title": f"{n}-{i}"},
                        headers={"Authorization": f"Bearer {server.api_key}"},
                    )
                except httpx.HTTPError:
                    return  # the server died under us: this one was never acknowledged
                if r.status_code == 201:
                    acked.append((u, r.json()["id"]))
                i += 1

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) >= 50, "publishers made too little progress to test anything"
    return acked


def start_nodes(workdir: Path, count: int, env: dict[str, str]) -> list[Server]:
    """`count` nodes sharing `env` (database, broker), one JWT secret and one API key; the
    first creates the key, the others start at the same time."""
    first = Server(workdir / "n0", env)
    nodes = [first]
    for i in range(1, count):
        node = Server(workdir / f"n{i}", {**env, "CLARION_JWT_SECRET": first.secret})
        node.secret = first.secret
        nodes.append(node)
    for node in nodes:
        node.workdir.mkdir(parents=True, exist_ok=True)
    try:
        first.start()
        for node in nodes[1:]:
            node.api_key = first.api_key
        errors: list[BaseException] = []

        def start(node: Server) -> None:
            try:
                node.start()
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in nodes[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[Server]) -> None:
    for node in nodes:
        node.kill(signal.SIGTERM)


class Tab(threading.Thread):
    """One user's browser tab: a WebSocket that starts on `nodes[first]` and, whenever its node
    closes it or dies, reconnects to the next node with its cursor, as clarion.js does. It
    records every notification event, and how often it had to reconnect."""

    def __init__(self, nodes: list[Server], user: str, first: int = 0) -> None:
        super().__init__(daemon=True)
        from clarion.streams import encode_cursor, user_stream

        self.nodes = nodes
        self.user = user
        self.first = first
        self.cursor = encode_cursor({user_stream(user): 0})  # from its first event on
        self.events: list[dict[str, Any]] = []
        self.connections = 0
        self.closes: list[int | None] = []
        self._halt = threading.Event()

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        i = self.first
        while not self._halt.is_set():
            node = self.nodes[i % len(self.nodes)]
            try:
                live = Live(node, self.user, self.cursor)
            except Exception:  # refused, draining, dead: the next node
                i += 1
                self._halt.wait(0.05)
                continue
            self.connections += 1
            try:
                while not self._halt.is_set():
                    try:
                        event = live.recv(0.2)
                    except TimeoutError:
                        continue
                    if event["type"] == "notification":
                        self.events.append(event)
                    self.cursor = live.cursor
            except (ConnectionClosed, OSError) as exc:
                rcvd = getattr(exc, "rcvd", None)
                self.closes.append(rcvd.code if rcvd is not None else None)
                i += 1
            finally:
                with contextlib.suppress(Exception):
                    live.close()

    def ids(self) -> list[str]:
        return [e["notification"]["id"] for e in self.events]

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Traffic:
    """Publisher threads, each sending to `users` in turn through the nodes in turn, paced.
    A publish that fails (node killed or draining, store down) is not acknowledged; it moves
    on to the next node. Records, per thread, the (user, id) acknowledged with 201, in order."""

    def __init__(self, nodes: list[Server], users: list[str], threads: int = 3) -> None:
        self.nodes = nodes
        self.users = users
        self.acked: list[list[tuple[str, str]]] = [[] for _ in range(threads)]
        self.failed = 0
        self._halt = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, n: int) -> None:
        i = 0
        with httpx.Client(timeout=10) as client:
            while not self._halt.is_set():
                user = self.users[(n + i) % len(self.users)]
                node = self.nodes[(n + i) % len(self.nodes)]
                i += 1
                try:
                    r = client.post(
                        node.url + "/v1/notifications",
                        json={"users": [user], "title": f"{n}-{i}"},
                        headers={"Authorization": f"Bearer {node.api_key}"},
                    )
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 201:
                    self.acked[n].append((user, r.json()["id"]))
                else:
                    self.failed += 1
                self._halt.wait(0.01)

    def count(self) -> int:
        return sum(len(a) for a in self.acked)

    def wait_for(self, more: int, timeout: float = 20) -> None:
        """Until `more` further publishes are acknowledged (bounded)."""
        target = self.count() + more
        eventually(lambda: self.count() >= target, timeout, f"{target} acknowledged publishes")

    def stop(self) -> None:
        self._halt.set()
        for t in self._threads:
            t.join(timeout=15)

    def of(self, user: str) -> list[list[str]]:
        """Per publisher thread, the ids acknowledged for `user`, in acknowledgement order."""
        return [[nid for u, nid in acked if u == user] for acked in self.acked]


def assert_exactly_once_in_order(tabs: list[Tab], traffic: Traffic, timeout: float = 20) -> None:
    """Every acknowledged notification reached its user's tab once, in order: the tab's seqs
    are 1, 2, 3... (gap-free, no repeat), and each publisher's acknowledged ids appear in the
    order they were acknowledged. Waits (bounded) for stragglers, then for duplicates."""
    deadline = time.monotonic() + timeout
    for tab in tabs:
        want = {nid for ids in traffic.of(tab.user) for nid in ids}
        while not want <= set(tab.ids()) and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.5)  # anything delivered twice would arrive now
    for tab in tabs:
        got = tab.ids()
        per_thread = traffic.of(tab.user)
        missing = {nid for ids in per_thread for nid in ids} - set(got)
        assert not missing, f"{tab.user}: {len(missing)} acknowledged ones never arrived"
        assert len(got) == len(set(got)), f"{tab.user}: delivered twice"
        seqs = [e["seq"] for e in tab.events]
        assert seqs == list(range(1, len(seqs) + 1)), f"{tab.user}: seqs {seqs}"
        where = {nid: i for i, nid in enumerate(got)}
        for ids in per_thread:
            order = [where[nid] for nid in ids]
            assert order == sorted(order), f"{tab.user}: out of order"
