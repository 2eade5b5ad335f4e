"""The services tests run against: the machine's PostgreSQL, Redis and NATS (skipped when
absent, failed in CI), fresh PostgreSQL databases, and private redis/nats processes of a test's
own that it may kill."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.util import free_port

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


@contextmanager
def node_database() -> Iterator[dict[str, str]]:
    """Environment overrides for the database the fixtures' nodes use."""
    if TEST_DATABASE == "postgres":
        with postgres_database() as url:
            yield {"CLARION_DATABASE_URL": url}
    else:
        yield {}


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
