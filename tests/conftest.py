"""Test harness: real `clarion serve` processes on free ports, real sockets, real signals."""

from __future__ import annotations

import asyncio
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

    def connect(self, user: str, cursor: str | None = None) -> Live:
        return Live(self, user, cursor)


class Live:
    """A WebSocket client that authenticates, keeps its cursor and collects events."""

    def __init__(self, server: Server, user: str, cursor: str | None = None) -> None:
        self._cm = ws_connect(server.ws_url, open_timeout=10, max_queue=None, close_timeout=2)
        self.ws: ClientConnection = self._cm.__enter__()
        auth: dict[str, Any] = {"type": "auth", "token": server.token(user)}
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
