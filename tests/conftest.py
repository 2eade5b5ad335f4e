"""Test harness: real `clarion serve` processes on free ports, real sockets, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI") == "true"

# External services for the PostgreSQL, Redis and NATS tests (overridable for other setups).
POSTGRES_URL = os.environ.get("CLARION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CLARION_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("CLARION_TEST_NATS", "nats://127.0.0.1:4222")
# `CLARION_TEST_DATABASE=postgres` runs the `server`/`fresh_server` fixtures on PostgreSQL.
TEST_DATABASE = os.environ.get("CLARION_TEST_DATABASE", "sqlite")


def require_service(name: str, url: str) -> None:
    """Skip when a service is not running here; in CI (`CI=true`) a missing service fails."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(f"{reason}; start it to run these tests")


def _admin_sql(statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (module); dropped afterwards."""
    require_service("PostgreSQL", POSTGRES_URL)
    name = "clarion_test_" + secrets.token_hex(6)
    _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One Clarion node as a child process; start, kill -9, restart, on the same database."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.secret = secrets.token_urlsafe(32)
        self.port = free_port()
        self.env = {
            **os.environ,
            "CLARION_JWT_SECRET": self.secret,
            "CLARION_DATABASE_URL": f"sqlite:///{workdir / 'clarion.db'}",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "clarion"), *args], env=self.env, capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode().strip()

    def start(self, *extra: str) -> Server:
        log = open(self.workdir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(BIN / "clarion"),
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *extra,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not become ready")
        if not self.api_key:
            self.api_key = self.cli("keys", "create", "--name", "tests")
        return self

    def log(self) -> str:
        path = self.workdir / f"server-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def token(self, user: str, ttl: int = 3600, **claims: Any) -> str:
        now = int(time.time())
        return jwt.encode(
            {"sub": user, "iat": now, "exp": now + ttl, **claims}, self.secret, algorithm="HS256"
        )

    def publish(self, **body: Any) -> httpx.Response:
        body.setdefault("title", "hello")
        return httpx.post(
            self.url + "/v1/notifications",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )

    def me(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def connect(self, user: str, cursor: str | None = None, **claims: Any) -> Live:
        """A live connection; `claims` (roles, topics) go into its token."""
        return Live(self, user, cursor, self.token(user, **claims) if claims else None)


class Live:
    """A WebSocket client that authenticates, keeps its cursor and collects events."""

    def __init__(
        self, server: Server, user: str, cursor: str | None = None, token: str | None = None
    ) -> None:
        self._cm = ws_connect(server.ws_url, open_timeout=10, max_queue=None, close_timeout=2)
        self.ws: ClientConnection = self._cm.__enter__()
        auth: dict[str, Any] = {"type": "auth", "token": token or server.token(user)}
        if cursor:
            auth["cursor"] = cursor
        self.ws.send(orjson.dumps(auth).decode())
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome
        from clarion.streams import decode_cursor

        self.position = decode_cursor(self.welcome["cursor"])

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.ws.recv(timeout=timeout))
        if "stream" in event and "seq" in event:
            self.position[event["stream"]] = event["seq"]
        return event

    def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.recv(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind:
                return event

    def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Events until none arrives for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(self.recv(quiet))
            except TimeoutError:
                return out

    @property
    def cursor(self) -> str:
        from clarion.streams import encode_cursor

        return encode_cursor(self.position)

    def close(self) -> None:
        self.ws.close()


@contextmanager
def _database() -> Iterator[dict[str, str]]:
    """Environment overrides for the database the fixtures' nodes use."""
    if TEST_DATABASE == "postgres":
        with postgres_database() as url:
            yield {"CLARION_DATABASE_URL": url}
    else:
        yield {}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared node for tests that do not restart it."""
    with _database() as env:
        srv = Server(tmp_path_factory.mktemp("shared"), env).start()
        yield srv
        srv.kill(signal.SIGTERM)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A node of the test's own, free to be killed and restarted."""
    with _database() as env:
        srv = Server(tmp_path, env)
        yield srv
        srv.kill()


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


def user_id() -> str:
    return "u-" + secrets.token_hex(6)


# -- whole clusters: several nodes, private brokers, tabs that follow a user across nodes -------


class PrivateService:
    """A redis-server or nats-server of the test's own on a free loopback port, in a temp dir:
    killed with a real SIGKILL by its pid and restarted on the same port, so the machine's
    shared servers are never touched."""

    COMMANDS = {
        "redis": (
            "redis-server",
            "--bind 127.0.0.1 --port {port} --dir {dir} --save '' --appendonly no "
            "--protected-mode no --daemonize no",
        ),
        "nats": ("nats-server", "-a 127.0.0.1 -p {port}"),
    }

    def __init__(self, kind: str, workdir: Path) -> None:
        import shlex
        import shutil

        binary, args = self.COMMANDS[kind]
        path = shutil.which(binary) or next(
            (p for p in (f"/usr/bin/{binary}", f"/usr/sbin/{binary}") if os.path.exists(p)), None
        )
        if path is None:
            reason = f"{binary} is not installed"
            if IN_CI:
                pytest.fail(f"{reason}; CI must provide it", pytrace=False)
            pytest.skip(reason)
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.argv = [path, *shlex.split(args.format(port=self.port, dir=workdir))]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    def start(self) -> PrivateService:
        log = open(self.workdir / f"{self.kind}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"{self.kind} exited: {self.argv}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, f"{self.kind} did not listen"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


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
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"traffic stalled at {self.count()}/{target}"
            time.sleep(0.02)

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
