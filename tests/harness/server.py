"""One Clarion node as a child process (`Server`) and a WebSocket client of it (`Live`)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from harness.util import free_port

BIN = Path(sys.executable).parent
STARTUP_SECONDS = 60  # how long `clarion serve` may take to answer /readyz


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
        # 60 s, not 30: with the machine's cores shared (xdist's two workers, other jobs; load
        # 38 on 2 cores) an import-heavy start took longer than 30 s. Under pytest-timeout's 120.
        deadline = time.monotonic() + STARTUP_SECONDS
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
            # A fixture failing before its `yield` never stops what it started: kill it here,
            # or it keeps its port, its store and a share of the cores for the rest of the run.
            self.kill()
            raise RuntimeError(f"server did not become ready: {self.log()[-2000:]}")
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
