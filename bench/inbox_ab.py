"""Two builds of Clarion side by side on one history store: server CPU per inbox call.

Each build serves its own copy of a store of `bench/history.py`: a cached SQLite file (e.g.
`bench/.work/history/sqlite-100000-<key>.db`) or, with `--postgres`, a database made from one
of its PostgreSQL templates (`clarion_hist_100000_<key>`, analysed first). Both servers are
pinned to core 0 and this client to core 1 (PostgreSQL's backends run where they run: its
CPU is not counted). Per operation, blocks of calls as `hist-main` alternate between the two
servers (a, b, b, a, ...), so a minute in which the machine runs slow costs both the same;
the report is each build's median CPU per call (from /proc/<pid>/task/*/schedstat) and the
median and range of the per-pair ratios. A build is a `clarion` executable (for an older
commit: a worktree and a wrapper running `python -m clarion` with its `src` on PYTHONPATH).

    python bench/inbox_ab.py --a /tmp/clarion-old --b .venv/bin/clarion --store <db>
    python bench/inbox_ab.py --a ... --b ... --store clarion_hist_100000_<key> \
        --postgres postgresql://postgres@127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

USER = "hist-main"  # bench/history.py's measured user


def psql(base: str, statement: str) -> None:
    subprocess.run(["psql", f"{base}/postgres", "-qAtc", statement], check=True, timeout=600)


class Server:
    def __init__(self, binary: str, store: str, port: int, postgres: str | None) -> None:
        self.tmp = tempfile.mkdtemp(prefix="clarion-ab-")
        self.postgres, self.pg_name = postgres, f"clarion_ab_{port}"
        if postgres:
            psql(postgres, f"DROP DATABASE IF EXISTS {self.pg_name}")
            psql(postgres, f"CREATE DATABASE {self.pg_name} TEMPLATE {store}")
            subprocess.run(["psql", f"{postgres}/{self.pg_name}", "-qc", "ANALYZE"], check=True)
            url = f"{postgres}/{self.pg_name}"
        else:
            shutil.copy(store, f"{self.tmp}/h.db")
            url = f"sqlite:///{self.tmp}/h.db"
        self.secret = secrets.token_urlsafe(32)
        unlimited = "10000000/second"
        env = {
            **os.environ,
            "CLARION_DATABASE_URL": url,
            "CLARION_JWT_SECRET": self.secret,
            "CLARION_LOG_LEVEL": "warning",
            "CLARION_RETENTION_INTERVAL": "86400",
            "CLARION_RATE_LIMIT_IP": unlimited,
            "CLARION_RATE_LIMIT_USER": unlimited,
        }
        argv = ["taskset", "-c", "0", binary, "serve", "--port", str(port)]
        log = open(f"{self.tmp}/server.log", "w")  # noqa: SIM115  (the server's, to its end)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        for _ in range(600):
            try:
                self.http.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        token = jwt.encode({"sub": USER, "exp": int(time.time()) + 7200}, self.secret, "HS256")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.call("GET", "/v1/me/topics")  # the token's follows synced: a write, not timed
        self.cursor = self.call("GET", "/v1/me/notifications?limit=20")["next_cursor"]
        items = self.call("GET", "/v1/me/notifications?limit=20&filter=unread")["items"]
        self.unread = items[0]["id"] if items else None

    def cpu_ms(self) -> float:
        tasks = f"/proc/{self.proc.pid}/task"
        total = 0
        for tid in os.listdir(tasks):
            with open(f"{tasks}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e6

    def call(self, method: str, path: str) -> Any:
        r = self.http.request(method, path, headers=self.headers)
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.postgres:
            psql(self.postgres, f"DROP DATABASE IF EXISTS {self.pg_name}")


Op = Callable[[Server, int], Any]
PAGE = "/v1/me/notifications?limit=20"
OPS: dict[str, Op] = {
    "GET /healthz (for scale)": lambda s, i: s.http.get("/healthz"),
    "unread count": lambda s, i: s.call("GET", "/v1/me/unread-count"),
    "first page, all": lambda s, i: s.call("GET", PAGE),
    "first page, unread": lambda s, i: s.call("GET", PAGE + "&filter=unread"),
    "next page (cursor)": lambda s, i: s.call("GET", f"{PAGE}&cursor={s.cursor}"),
    "mark read / unread": lambda s, i: s.call(
        "POST", f"/v1/me/notifications/{s.unread}/{'unread' if i % 2 else 'read'}"
    ),
    "read-all": lambda s, i: s.call("POST", "/v1/me/notifications/read-all"),
}


def block(server: Server, op: Op, calls: int) -> float:
    op(server, 0)
    op(server, 1)
    before = server.cpu_ms()
    for i in range(calls):
        op(server, i)
    return (server.cpu_ms() - before) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="clarion executable of build a (the base)")
    ap.add_argument("--b", required=True, help="clarion executable of build b")
    ap.add_argument("--store", required=True, help="a SQLite file or PostgreSQL template")
    ap.add_argument("--postgres", default=None, help="postgresql://user@host:port (no database)")
    ap.add_argument("--blocks", type=int, default=8, help="blocks per build and operation")
    ap.add_argument("--calls", type=int, default=40, help="calls per block")
    ap.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds of untimed calls on each server first: a fresh server on a copied store "
        "counts 2-3x its steady cost for its first seconds (10)",
    )
    cfg = ap.parse_args()
    os.sched_setaffinity(0, {1})
    servers = [
        Server(cfg.a, cfg.store, 18791, cfg.postgres),
        Server(cfg.b, cfg.store, 18792, cfg.postgres),
    ]
    try:
        for server in servers:
            until = time.monotonic() + cfg.warmup
            while time.monotonic() < until:
                for name in ("unread count", "first page, all", "first page, unread"):
                    OPS[name](server, 0)
        print("| operation | a, ms CPU | b, ms CPU | a / b (median of pairs, range) |")
        print("|---|---:|---:|---|")
        for name, op in OPS.items():
            if ("mark" in name and not all(s.unread for s in servers)) or (
                "cursor" in name and not all(s.cursor for s in servers)
            ):
                continue
            per: list[list[float]] = [[], []]
            for k in range(cfg.blocks):
                for j in (0, 1) if k % 2 == 0 else (1, 0):
                    per[j].append(block(servers[j], op, cfg.calls))
            ratios = sorted(a / b for a, b in zip(per[0], per[1], strict=True))
            a, b = statistics.median(per[0]), statistics.median(per[1])
            spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
            print(f"| {name} | {a:.2f} | {b:.2f} | {statistics.median(ratios):.2f} ({spread}) |")
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
