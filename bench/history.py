#!/usr/bin/env python3
"""History: what one user's inbox calls cost against the notifications the store holds.

    python bench/history.py                                  # 1k, 10k, 100k on SQLite
    python bench/history.py --postgres postgresql://postgres@127.0.0.1:5432   # ... and PostgreSQL
    python bench/history.py --sizes 1000000 --backends sqlite
    python bench/history.py --quick                          # 1k and 10k on SQLite, no plot

For each size N and backend, a store is filled with N notifications through a real `clarion
serve` (the batch API, 500 per request, 4 in flight), then a fresh server on that store is
timed from the client, one request at a time over loopback (server pinned to core 0, this
driver on core 1), after 10 s of untimed reads (--warmup), median and p90 of 21 requests per
operation (--samples; 7 for read-all and archive-all, --reps):

  page_all, page_unread, page_archived   GET /v1/me/notifications?filter=...&limit=20
  page_next                              the second page of filter=all, by its next_cursor
  unread_count                           GET /v1/me/unread-count
  mark_read, mark_unread                 POST .../{id}/read, then .../{id}/unread (20 ids)
  read_all, archive_all                  POST .../read-all and .../archive-all: each on its own
                                         user whose whole history is unread (7 users each)
  ws_connect                             /v1/ws: from the `auth` frame sent to `unread` received

PostgreSQL is measured twice on the same data: right after the load with no statistics (the
bench turns autovacuum off for Clarion's tables before loading, so the planner never saw the
data, as after a bulk import or a fast-growing first day) and after `ANALYZE`. Loaded stores of
--cache-from (100,000) notifications or more are kept in bench/.work/history/ (SQLite files) and
as PostgreSQL template databases `clarion_hist_<N>_<key>`, keyed by the size, this bench's data
version and a hash of the installed Clarion's code, so a second run skips the load.
Results: bench/results/history-<stamp>.{json,md}; plot: docs/img/bench-history.png.
Only the public HTTP/WS API and the CLI are used, so the bench runs on any version.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import itertools
import json
import math
import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from clarion_bench.noise import Sample, wait_quiet
from clarion_bench.proc import (
    BENCH,
    RESULTS,
    WORK,
    BenchError,
    console,
    ensure_venv,
    find_clarion,
    machine,
    run_checked,
)
from clarion_bench.report import plots
from clarion_bench.stores import HISTORY_CACHE, HISTORY_DATA_VERSION, code_key, history_sqlite
from clarion_bench.targets import Clarion, mint_hs256
from rich.progress import Progress
from websockets.sync.client import connect as ws_connect

DATA_VERSION = HISTORY_DATA_VERSION  # clarion_bench.stores: bump it when the data below changes
CACHE = HISTORY_CACHE
SIZES = [1_000, 10_000, 100_000]
BATCH = 500  # notifications per POST /v1/notifications/batch
IN_FLIGHT = 4  # batch requests in flight while loading
REPS = 7  # repetitions of read-all and archive-all (each needs a fresh user per pass)
SAMPLES = 21  # requests per read-only operation, and marks (up to the 20 of an unread page)
WARMUP = 10.0  # seconds of untimed reads before the first timed call: see `warm_up`

# The data: 10,000 users; 55% of notifications to `all`, 35% to one of 8 topics (the measured
# users follow 3 of them), 10% personal, to one random user, or (1 in 50 of those) by name to
# every measured user. One in 10 personal ones and one in 1,000 shared ones carry one of 10
# collapse keys (few shared ones: on the code of issue #10, publishing a shared one with a
# collapse key reads every id of its stream, so more would make loading a million take hours);
# 2% are expired (half with an `expires_at` in the past, half with a 1 s `ttl`). The main
# measured user archived all it had at 25% of the load and read all it had at 50% (so it has
# read, archived and unread ones); the users that read-all and archive-all are timed on have
# their whole history unread.
USERS = 10_000
TOPICS = [f"h{i}" for i in range(8)]
FOLLOWED = TOPICS[:3]
TOPIC_FOLLOWERS = 2_000  # random users subscribed to each topic
TYPES = ["message", "comment", "mention", "system", "promo"]
MAIN = "hist-main"
PASSES = 2  # user sets for read-all / archive-all: one per measurement pass on the same data


def pass_users(kind: str, p: int) -> list[str]:
    """The users whose inbox one stateful operation consumes in pass `p` (one per repetition)."""
    return [f"hist-{kind}{p}-{i}" for i in range(REPS)]


MEASURED = [MAIN] + [u for p in range(PASSES) for k in ("r", "a") for u in pass_users(k, p)]

OPS: dict[str, str] = {
    "page_all": "first page, all",
    "page_unread": "first page, unread",
    "page_archived": "first page, archived",
    "page_next": "next page (cursor)",
    "unread_count": "unread count",
    "mark_read": "mark read",
    "mark_unread": "mark unread",
    "read_all": "read-all",
    "archive_all": "archive-all",
    "ws_connect": "WebSocket connect",
}
# What issue #10 asks of each operation, in ms, whatever the size.
TARGETS = {
    "page_all": 10,
    "page_unread": 10,
    "page_archived": 10,
    "page_next": 10,
    "unread_count": 2,
    "mark_read": 5,
    "mark_unread": 5,
    "read_all": 20,
    "archive_all": 20,
    "ws_connect": 3,
}


def notification(rng: random.Random, i: int) -> dict[str, Any]:
    """The i-th notification of the history, drawn from `rng` (the same for every run)."""
    r = rng.random()
    audience: dict[str, Any]
    if r < 0.10:
        users = MEASURED if rng.random() < 0.02 else [f"u{rng.randrange(USERS)}"]
        audience = {"users": users}
    elif r < 0.45:
        audience = {"topics": [rng.choice(TOPICS)]}
    else:
        audience = {"all": True}
    kind = rng.choice(TYPES)
    body: dict[str, Any] = {
        **audience,
        "type": kind,
        "priority": rng.choices(["normal", "low", "high"], [80, 15, 5])[0],
        "title": f"{kind} #{i}",
        "body": f"Notification {i} of the history bench: a sentence of ordinary length.",
        "url": f"/items/{i}",
        "data": {"i": i},
    }
    extra = rng.random()
    if extra < (0.1 if "users" in audience else 0.001):
        body["collapse_key"] = f"ck-{rng.randrange(10)}"
    elif 0.2 <= extra < 0.21:
        body["expires_at"] = "2020-01-01T00:00:00Z"
    elif 0.3 <= extra < 0.31:
        body["ttl"] = 1
    return body


# ---------------------------------------------------------------------------------------------
# The server under test, on a store that outlives it.


class Server(Clarion):
    """`clarion serve` on a given database, kept between starts (Clarion starts afresh)."""

    name = "clarion-history"
    # No retention run during a load or a measurement: expired notifications stay, as between
    # runs (`--sweep` starts one server with a short interval before measuring).
    retention = 86400.0

    def env(self) -> dict[str, str]:
        return {**super().env(), "CLARION_RETENTION_INTERVAL": f"{self.retention:g}"}

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [str(self.binary), "serve", "--port", str(self.port)]
        return [*argv, "--database-url", self.database_url], self.env()

    def token(self, user: str) -> str:
        return mint_hs256(self.secret, user, ttl=86400)


@contextlib.contextmanager
def serving(binary: Path, url: str, logdir: Path, retention: float = 86400.0) -> Iterator[Server]:
    server = Server(logdir, binary, 1, url)
    server.retention = retention
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.tmp, ignore_errors=True)


class Api:
    """One keep-alive HTTP connection to the server, as the publisher or as a user."""

    def __init__(self, server: Server, timeout: float) -> None:
        self.server = server
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=timeout)
        self.tokens: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def as_user(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            self.tokens[user] = self.server.token(user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def publisher(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.api_key}"}

    def call(self, method: str, path: str, user: str | None = None, **kw: Any) -> Any:
        headers = self.as_user(user) if user else self.publisher()
        r = self.http.request(method, path, headers=headers, **kw)
        if r.status_code >= 300:
            raise BenchError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json()


# ---------------------------------------------------------------------------------------------
# Loading.


def setup(api: Api, seed: int) -> None:
    """Before any notification: the measured users are seen (so they follow `all` from seq 0)
    and subscribed to their topics; each topic gets its random followers."""
    rng = random.Random(seed + 1)
    for user in MEASURED:
        api.call("GET", "/v1/me/topics", user)
    for topic in TOPICS:
        users = rng.sample([f"u{i}" for i in range(USERS)], TOPIC_FOLLOWERS)
        if topic in FOLLOWED:
            users += MEASURED
        for start in range(0, len(users), 1000):
            chunk = users[start : start + 1000]
            api.call("PUT", f"/v1/topics/{topic}/subscribers", json={"users": chunk})


def post_batch(api: Api, items: list[dict[str, Any]]) -> None:
    r = api.http.post(
        "/v1/notifications/batch",
        content=orjson.dumps({"notifications": items}),
        headers={**api.publisher(), "Content-Type": "application/json"},
    )
    if r.status_code != 200:
        raise BenchError(f"batch answered {r.status_code}: {r.text[:300]}")
    bad = [x for x in r.json()["results"] if x["status"] != 201]
    if bad:
        raise BenchError(f"{len(bad)} of a batch not stored, first: {bad[0]}")


def load(server: Server, n: int, seed: int, note: Callable[[str], None]) -> dict[str, Any]:
    """Setup, then N notifications in batches, the main user acting at 25% and 50%."""
    api = Api(server, timeout=1800)
    apis = [Api(server, timeout=600) for _ in range(IN_FLIGHT)]
    rng = random.Random(seed)
    t0 = time.monotonic()
    try:
        setup(api, seed)
        actions = {n // 4: "archive-all", n // 2: "read-all"}
        bounds = sorted({0, *actions, n})
        posting = 0.0
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            for lo, hi in itertools.pairwise(bounds):
                t1 = time.monotonic()
                futures: list[Future[None]] = []
                for start in range(lo, hi, BATCH):
                    items = [notification(rng, i) for i in range(start, min(hi, start + BATCH))]
                    if len(futures) >= IN_FLIGHT:
                        futures.pop(0).result()
                    futures.append(pool.submit(post_batch, apis[start // BATCH % IN_FLIGHT], items))
                    note(f"loading {min(hi, start + BATCH):,}/{n:,}")
                for f in futures:
                    f.result()
                posting += time.monotonic() - t1
                if hi in actions:
                    note(f"{MAIN}: {actions[hi]} at {hi:,}")
                    api.call("POST", f"/v1/me/notifications/{actions[hi]}", MAIN)
    finally:
        for a in (api, *apis):
            a.close()
    total = time.monotonic() - t0
    return {
        "seconds": round(total, 1),
        "notifications_per_s": round(n / posting) if posting else None,
    }


# ---------------------------------------------------------------------------------------------
# Measuring.


class Timeout(Exception):
    """A call took longer than --timeout: its operation is reported as slower than that."""


Snapshot = dict[int, int]  # pid -> nanoseconds it has run on a CPU


def oncpu_ns(pids: Iterable[int]) -> Snapshot:
    """Nanoseconds each process (all its threads) has run on a CPU, from
    /proc/<pid>/task/*/schedstat: precise to the nanosecond where /proc's CPU times count 10 ms
    ticks, which a 1 ms call would not move. Processes gone meanwhile are left out."""
    out: Snapshot = {}
    for pid in pids:
        total = 0
        try:
            for task in os.scandir(f"/proc/{pid}/task"):
                with open(f"{task.path}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[pid] = total
    return out


def cpu_ms(before: Snapshot, after: Snapshot) -> float:
    """Milliseconds of CPU between two snapshots; a process that appeared in between (a new
    database connection) counts from zero."""
    return sum(ns - before.get(pid, 0) for pid, ns in after.items()) / 1e6


def median(xs: list[float]) -> float:
    """The lower median, as the wall-clock figures are reported."""
    return sorted(xs)[(len(xs) - 1) // 2]


@dataclass
class Op:
    samples: list[float] = field(default_factory=list)
    timeout: float | None = None  # seconds, when a call did not answer within it
    server_cpu: list[float] = field(default_factory=list)  # Clarion's CPU ms, per sample
    db_cpu: list[float] = field(default_factory=list)  # the database server's (PostgreSQL)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(self.samples), "samples_ms": self.samples}
        if self.samples:
            ordered = sorted(self.samples)
            out["median_ms"] = round(median(ordered), 3)
            out["p90_ms"] = round(ordered[math.ceil(0.9 * len(ordered)) - 1], 3)
        if self.server_cpu:
            out["server_cpu_ms"] = round(median(self.server_cpu), 3)
        if self.db_cpu:
            out["db_cpu_ms"] = round(median(self.db_cpu), 3)
            out["db_cpu_samples_ms"] = self.db_cpu
        if self.timeout is not None:
            out["timeout_s"] = self.timeout
        return out


class Meter:
    """Times the calls of one operation: up to `reps` samples, fewer once `budget` seconds are
    spent. A call past `timeout` marks the operation and ends the step (Timeout). With `pids`
    (Clarion's processes, the database server's processes serving it), each sample also
    records the CPU both spent on the call: the figure a busy machine does not inflate much,
    and on PostgreSQL the database server's own share of the call."""

    def __init__(
        self,
        reps: int,
        budget: float,
        timeout: float,
        pids: Callable[[], tuple[list[int], list[int]]] | None = None,
    ) -> None:
        self.reps = reps
        self.budget = budget
        self.timeout = timeout
        self.pids = pids
        self.last_cpu: tuple[float, float] | None = None

    def snapshot(self, known: tuple[Snapshot, Snapshot] | None = None) -> tuple[Snapshot, Snapshot]:
        """CPU so far of Clarion's and the database's processes. After a call (`known`: the
        snapshot before it), the processes known before are read first, at once, and only then
        are the processes listed again (a psql round trip) for the ones the call started."""
        if self.pids is None:
            return {}, {}
        if known is None:
            server, db = self.pids()
            return oncpu_ns(server), oncpu_ns(db)
        now = oncpu_ns(known[0]), oncpu_ns(known[1])
        server, db = self.pids()
        now[0].update(oncpu_ns(p for p in server if p not in known[0]))
        now[1].update(oncpu_ns(p for p in db if p not in known[1]))
        return now

    def sample(self, op: Op, fn: Callable[[], Any], keep: bool = True) -> float:
        """Milliseconds `fn` took, or the float it returns (when only part of it counts)."""
        before = self.snapshot()
        t0 = time.perf_counter()
        try:
            own = fn()
        except (httpx.TimeoutException, TimeoutError) as exc:
            op.timeout = self.timeout
            raise Timeout from exc
        ms = own if isinstance(own, float) else (time.perf_counter() - t0) * 1000
        after = self.snapshot(before)
        self.last_cpu = (cpu_ms(before[0], after[0]), cpu_ms(before[1], after[1]))
        if keep:
            self.keep(op, ms)
        return ms

    def keep(self, op: Op, ms: float) -> None:
        op.samples.append(round(ms, 3))
        if self.pids is not None and self.last_cpu is not None:
            op.server_cpu.append(round(self.last_cpu[0], 3))
            if db := self.last_cpu[1]:
                op.db_cpu.append(round(db, 3))

    def repeat(
        self, op: Op, fn: Callable[[int], Any], warm: bool = True, reps: int | None = None
    ) -> None:
        """A warm-up call when `warm`, then the repetitions (`reps`, else the meter's). The
        warm-up is kept as a sample when it took over a second: a cold start is lost in that,
        and it saves a long call."""
        spent = 0.0
        if warm:
            ms = self.sample(op, lambda: fn(0), keep=False)
            if ms > 1000:
                self.keep(op, ms)
                spent = ms / 1000
        for rep in range(len(op.samples), self.reps if reps is None else reps):
            if spent > self.budget:
                break
            spent += self.sample(op, lambda rep=rep: fn(rep)) / 1000


def ws_unread(url: str, token: str, timeout: float) -> float:
    """Connects, sends `auth`, waits for the `unread` event; returns the milliseconds from the
    `auth` frame to `unread` (the upgrade before it does not depend on history)."""
    with ws_connect(url, open_timeout=timeout, max_size=None) as ws:
        t0 = time.perf_counter()
        ws.send(json.dumps({"type": "auth", "token": token}))
        while True:
            msg = json.loads(ws.recv(timeout=timeout))
            if msg.get("type") == "unread":
                return (time.perf_counter() - t0) * 1000
            if msg.get("type") == "error":
                raise BenchError(f"WebSocket error: {msg}")


def measure(
    server: Server,
    p: int,
    cfg: argparse.Namespace,
    restart: Callable[[], None],
    note: Callable[[str], None],
    db_pids: Callable[[], list[int]] = list,
    expired_left: Callable[[], int] = lambda: 0,
) -> dict[str, Any]:
    """Every operation, in pass `p` (with its own read-all and archive-all users); `db_pids`
    gives the database server's processes that serve Clarion (none for SQLite),
    `expired_left` how many expired notifications no sweep removed yet."""
    readers, archivers = pass_users("r", p), pass_users("a", p)
    ops = {name: Op() for name in OPS}

    def pids() -> tuple[list[int], list[int]]:
        return [p.pid for p in server._procs()], db_pids()

    meter = Meter(cfg.samples, cfg.op_budget, cfg.timeout, pids)
    api = Api(server, cfg.timeout)
    base = "/v1/me/notifications"
    page = f"{base}?limit=20&filter="
    found: dict[str, Any] = {}

    def get(path: str) -> None:
        api.call("GET", path, MAIN)

    def first_page(f: str) -> None:
        # The last answer of `all` gives the next page's cursor, of `unread` the ids to mark.
        def call(_rep: int) -> None:
            found[f] = api.call("GET", page + f, MAIN)

        meter.repeat(ops[f"page_{f}"], call)

    def next_page() -> None:
        cursor = found.get("all", {}).get("next_cursor")
        if cursor:
            meter.repeat(ops["page_next"], lambda _r: get(f"{page}all&cursor={cursor}"))

    def count() -> None:
        meter.repeat(ops["unread_count"], lambda _r: get("/v1/me/unread-count"))

    def websocket() -> None:
        token = api.as_user(MAIN)["Authorization"].split()[1]
        meter.repeat(ops["ws_connect"], lambda _r: ws_unread(server.ws_url(), token, cfg.timeout))

    def marks() -> None:
        """Read, then unread again, each of the first unread ones: the page stays as it was."""
        spent = 0.0
        for id in [x["id"] for x in found.get("unread", {}).get("items", [])][: cfg.samples]:
            for kind in ("read", "unread"):
                call = functools.partial(api.call, "POST", f"{base}/{id}/{kind}", MAIN)
                spent += meter.sample(ops[f"mark_{kind}"], call) / 1000
            if spent > 2 * cfg.op_budget:
                break

    def everything(kind: str, users: list[str]) -> None:
        """Each repetition on another user, whose whole history is still unread."""
        path = f"{base}/{kind}-all"
        call = lambda r: api.call("POST", path, users[r])  # noqa: E731
        meter.repeat(ops[f"{kind}_all"], call, warm=False, reps=cfg.reps)

    def greet() -> None:
        # A user's first call in a process also brings its follows in line with its token (a
        # write): made here, so that the timed calls are the steady-state ones.
        for user in [MAIN, *readers, *archivers]:
            api.call("GET", "/v1/me/topics", user)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("first page, all", lambda: first_page("all")),
        ("first page, unread", lambda: first_page("unread")),
        ("first page, archived", lambda: first_page("archived")),
        ("next page", next_page),
        ("unread count", count),
        ("WebSocket connect", websocket),
        ("mark read/unread", marks),
        ("read-all", lambda: everything("read", readers)),
        ("archive-all", lambda: everything("archive", archivers)),
    ]

    def warm_up() -> None:
        """Untimed reads of the main user's for `--warmup` seconds, and until the server's
        expiry sweep has hidden what expired before it started: a server that has been up a
        few seconds. Timed from its first second, a fresh process on a copied store counted
        2-3x its steady cost for about 5 s (not pinned down: the readers' page caches and the
        sweep's first pass over what expired while the store sat cached are candidates)."""
        deadline = time.monotonic() + cfg.warmup
        token = api.as_user(MAIN)["Authorization"].split()[1]
        while time.monotonic() < deadline or (expired_left() and time.monotonic() < deadline + 60):
            get("/v1/me/unread-count")
            get(f"{page}all")
            get(f"{page}unread")
            ws_unread(server.ws_url(), token, cfg.timeout)

    try:
        greet()
        if cfg.warmup > 0:
            note("warming up")
            warm_up()
        for name, step in steps:
            note(f"measuring {name}")
            try:
                step()
            except Timeout:
                # The server may still be at it: restart it, so the next step starts clean.
                note(f"{name}: no answer in {cfg.timeout:g} s; restarting the server")
                api.close()
                restart()
                api = Api(server, cfg.timeout)
                greet()
    finally:
        api.close()
    return {name: op.summary() for name, op in ops.items()}


# ---------------------------------------------------------------------------------------------
# Backends: where a store lives, how it is cached, copied and dropped.


class Sqlite:
    name = "sqlite"
    passes = ("sqlite",)

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def cache_path(self, n: int, key: str) -> Path:
        return history_sqlite(n, key)

    def prepare(self, n: int, key: str, use_cache: bool) -> tuple[str, bool]:
        """A fresh database URL: a copy of the cached store when there is one."""
        db = self.tmp / f"history-{n}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        cached = self.cache_path(n, key)
        if use_cache and cached.exists():
            shutil.copyfile(cached, db)
            return f"sqlite:///{db}", True
        return f"sqlite:///{db}", False

    def after_migrations(self, url: str) -> None:
        pass

    def save(self, url: str, n: int, key: str) -> None:
        db = Path(url.split(":///", 1)[1])
        CACHE.mkdir(parents=True, exist_ok=True)
        for old in CACHE.glob(f"sqlite-{n}-*.db"):
            old.unlink()
        part = self.cache_path(n, key).with_suffix(".part")
        part.unlink(missing_ok=True)
        # SQLite's backup copies what the write-ahead log holds too: one self-contained file.
        src, dst = sqlite3.connect(db), sqlite3.connect(part)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        part.rename(self.cache_path(n, key))

    def before_pass(self, url: str, label: str) -> None:
        pass

    def cancel(self, url: str) -> None:
        pass

    def backend_pids(self, url: str) -> list[int]:
        return []  # SQLite runs inside Clarion's process

    def expired_left(self, url: str) -> int:
        """Expired notifications still stored (retention removes them)."""
        db = sqlite3.connect(url.split(":///", 1)[1], timeout=60)
        try:
            q = "SELECT count(*) FROM notifications WHERE expires_at < datetime('now')"
            return int(db.execute(q).fetchone()[0])
        finally:
            db.close()

    def release(self, url: str) -> None:
        db = url.split(":///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


class Postgres:
    name = "postgres"
    passes = ("postgres", "postgres_analyzed")

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def sql(self, db: str, statement: str) -> str:
        return run_checked(
            ["psql", f"{self.base}/{db}", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", statement], 3600
        )

    def template(self, n: int, key: str) -> str:
        return f"clarion_hist_{n}_{key}"

    def prepare(self, n: int, key: str, use_cache: bool) -> tuple[str, bool]:
        db = f"bench_hist_{secrets.token_hex(4)}"
        template = self.template(n, key)
        found = self.sql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{template}'")
        if use_cache and found.strip():
            self.sql("postgres", f"CREATE DATABASE {db} TEMPLATE {template}")
            return f"{self.base}/{db}", True
        self.sql("postgres", f"CREATE DATABASE {db}")
        return f"{self.base}/{db}", False

    def after_migrations(self, url: str) -> None:
        """No statistics until the bench asks for them: autovacuum off on every table."""
        db = url.rsplit("/", 1)[1]
        tables = self.sql(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for table in tables.split():
            self.sql(db, f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')

    def save(self, url: str, n: int, key: str) -> None:
        db = url.rsplit("/", 1)[1]
        rows = self.sql(  # an older version's store of this size
            "postgres", f"SELECT datname FROM pg_database WHERE datname ~ '^clarion_hist_{n}_'"
        )
        for old in rows.split():
            self.sql("postgres", f"DROP DATABASE IF EXISTS {old}")
        self.sql("postgres", f"CREATE DATABASE {self.template(n, key)} TEMPLATE {db}")

    def before_pass(self, url: str, label: str) -> None:
        if label == "postgres_analyzed":
            self.sql(url.rsplit("/", 1)[1], "ANALYZE")

    def backend_pids(self, url: str) -> list[int]:
        """The PostgreSQL processes serving the database's connections (Clarion's pools)."""
        db = url.rsplit("/", 1)[1]
        rows = self.sql(
            "postgres",
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()",
        )
        return [int(x) for x in rows.split()]

    def expired_left(self, url: str) -> int:
        """Expired notifications still stored (retention removes them)."""
        db = url.rsplit("/", 1)[1]
        return int(self.sql(db, "SELECT count(*) FROM notifications WHERE expires_at < now()"))

    def cancel(self, url: str) -> None:
        """End the queries a stopped server left running."""
        db = url.rsplit("/", 1)[1]
        self.sql(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{db}' AND pid <> pg_backend_pid()",
        )

    def release(self, url: str) -> None:
        db = url.rsplit("/", 1)[1]
        with contextlib.suppress(BenchError, OSError, subprocess.TimeoutExpired):
            self.sql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


Backend = Sqlite | Postgres


def run_size(
    backend: Backend,
    n: int,
    cfg: argparse.Namespace,
    note: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Load (or reuse) a store of N notifications, then measure each pass of the backend."""
    use_cache = cfg.load_only or (not cfg.no_cache and n >= cfg.cache_from)
    url, cached = backend.prepare(n, cfg.key, use_cache)
    out: dict[str, dict[str, Any]] = {}
    try:
        loaded: dict[str, Any] = {"cached": True}
        if not cached:
            with serving(cfg.binary, url, cfg.logdir) as server:
                backend.after_migrations(url)
                loaded = {"cached": False, **load(server, n, cfg.seed, note)}
            if use_cache:
                note("caching the loaded store")
                backend.save(url, n, cfg.key)
        if cfg.load_only:
            return out
        swept = sweep(backend, url, cfg, note) if cfg.sweep else None
        for p, label in enumerate(backend.passes):
            backend.before_pass(url, label)
            with serving(cfg.binary, url, cfg.logdir) as server:

                def restart(server: Server = server) -> None:
                    server.stop()
                    backend.cancel(url)
                    server.start()

                quiet = wait_quiet(cfg.quiet_wait, note)
                before = busy(server)
                ops = measure(
                    server,
                    p,
                    cfg,
                    restart,
                    lambda t, lb=label: note(f"{lb}: {t}"),
                    lambda: backend.backend_pids(url),
                    lambda: backend.expired_left(url),
                )
                noise = other_cpu(before, busy(server))
            res = {"load": loaded, "ops": ops, "quiet_before": quiet, "other_cpu": noise}
            if swept is not None:
                res["swept"] = swept
            out[f"{label}_swept" if swept is not None else label] = res
    finally:
        backend.release(url)
    return out


def sweep(backend: Backend, url: str, cfg: argparse.Namespace, note: Callable[[str], None]) -> Any:
    """Retention once, as a server does every `CLARION_RETENTION_INTERVAL` (10 minutes by
    default): expired notifications go (their routes stay, hidden and counted by bucket). The
    loads run without it, so their expired ones are all still there, and each is a route an
    unread count and a page look at one by one. Returns how long it took and what is left."""
    t0 = time.monotonic()
    left = backend.expired_left(url)
    with serving(cfg.binary, url, cfg.logdir, retention=1.0):
        while left and time.monotonic() - t0 < cfg.sweep_timeout:
            note(f"retention: {left:,} expired notifications left")
            time.sleep(2)
            left = backend.expired_left(url)
    return {"seconds": round(time.monotonic() - t0, 1), "expired_left": left}


def busy(server: Server) -> tuple[float, float, float]:
    """(instant, CPU seconds of the whole machine, CPU seconds of the server and this driver)."""
    me = sum(psutil.Process().cpu_times()[:2])
    return time.monotonic(), Sample._busy(), server.cpu_seconds() + me


def other_cpu(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores busy with other work during a pass (on PostgreSQL, the database's too; a server
    restarted after a timeout inflates it): a pass where this is high has suspect figures."""
    wall = max(1e-3, after[0] - before[0])
    return round(max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall, 2)


# ---------------------------------------------------------------------------------------------
# Report.


def cell(op: dict[str, Any] | None, want: int) -> str:
    """`median (p90)`, with the number of samples when fewer than `want` were taken."""
    if not op:
        return "-"
    if "median_ms" not in op:
        return f"> {op['timeout_s']:g} s" if "timeout_s" in op else "-"
    text = f"{fmt_ms(op['median_ms'])} ({fmt_ms(op['p90_ms'])})"
    return text + (f" n={op['n']}" if op["n"] < want else "")


def fmt_ms(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


LABELS = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL, no statistics (right after the load)",
    "postgres_analyzed": "PostgreSQL after ANALYZE",
    "sqlite_swept": "SQLite, after a retention pass",
    "postgres_swept": "PostgreSQL after a retention pass, no statistics",
    "postgres_analyzed_swept": "PostgreSQL after a retention pass and ANALYZE",
}


def cpu_table(sizes: dict[str, Any], ns: list[str]) -> list[str]:
    """The CPU each call cost, median: Clarion's, and on PostgreSQL the database server's
    (its processes serving Clarion); nothing for results of runs that did not record it."""
    got = [n for n in ns if any("server_cpu_ms" in o for o in sizes[n]["ops"].values())]
    if not got:
        return []
    db = any("db_cpu_ms" in o for n in got for o in sizes[n]["ops"].values())
    what = "Clarion / PostgreSQL server" if db else "Clarion (SQLite inside it)"
    lines = [
        "",
        f"CPU per call, ms, median ({what}), from /proc/<pid>/task/*/schedstat:",
        "",
        "| operation | " + " | ".join(f"{int(n):,} stored" for n in got) + " |",
        "|---|" + "---:|" * len(got),
    ]
    for op, title in OPS.items():
        cells = []
        for n in got:
            o = sizes[n]["ops"].get(op) or {}
            c = fmt_ms(o["server_cpu_ms"]) if "server_cpu_ms" in o else "-"
            if db:
                c += " / " + (fmt_ms(o["db_cpu_ms"]) if "db_cpu_ms" in o else "-")
            cells.append(c)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    reps, samples = config["reps"], config.get("samples", config["reps"])
    warm = config.get("warmup_s")
    lines = [
        f"## History: per-user cost against notifications stored ({report['started']})",
        "",
        f"Milliseconds, median (p90) of {samples} sequential requests from the client over "
        f"loopback ({reps} for read-all and archive-all, each on a user of its own); server "
        "on one core"
        + (f", after {warm:g} s of untimed reads" if warm else "")
        + ". Target: issue #10's bound for the operation. `> T s`: a call "
        "got no answer within T s; `-`: not measured, as the page it needs (the cursor, the "
        "unread ids) got none.",
    ]
    for label, sizes in report["results"].items():
        ns = sorted(sizes, key=int)
        lines += [
            "",
            f"### {LABELS.get(label, label)}",
            "",
            "| operation | target | " + " | ".join(f"{int(n):,} stored" for n in ns) + " |",
            "|---|---:|" + "---:|" * len(ns),
        ]
        for op, title in OPS.items():
            want = reps if op in ("read_all", "archive_all") else samples
            row = [cell(sizes[n]["ops"].get(op), want) for n in ns]
            lines.append(f"| {title} | {TARGETS[op]} | " + " | ".join(row) + " |")
        lines += cpu_table(sizes, ns)
        noise = [f"{int(n):,}: {sizes[n].get('other_cpu', 0):.2f}" for n in ns]
        lines += ["", "Cores busy with other work during the measurements: " + ", ".join(noise)]
        loads = [
            f"{int(n):,} in {ld['seconds']} s ({ld['notifications_per_s']:,}/s)"
            for n in ns
            if not (ld := sizes[n]["load"]).get("cached") and not label.endswith("_analyzed")
        ]
        if loads:
            lines += ["", "Loaded through the batch API: " + ", ".join(loads) + "."]
    if report["config"].get("included"):
        lines += ["", "Carried over from earlier runs: " + ", ".join(report["config"]["included"])]
    if report["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in report["errors"].items())]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 on SQLite, no plot")
    ap.add_argument("--sizes", default=None, help="notifications stored (1000,10000,100000)")
    ap.add_argument(
        "--backends",
        default=None,
        help="sqlite,postgres (postgres: --postgres); none: only merge the --include results",
    )
    ap.add_argument(
        "--postgres",
        default=None,
        help="a PostgreSQL server URL, such as postgresql://postgres@127.0.0.1:5432 (fresh "
        "databases are created and dropped; cached stores stay as template databases)",
    )
    ap.add_argument(
        "--reps",
        type=int,
        default=REPS,
        choices=range(1, REPS + 1),
        help=f"repetitions of read-all and archive-all ({REPS})",
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=SAMPLES,
        help=f"requests per read-only operation, and marks (at most 20) ({SAMPLES})",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help=f"seconds of untimed reads before timing ({WARMUP:g}; quick 2; 0: none)",
    )
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take")
    ap.add_argument(
        "--op-budget", type=float, default=15.0, help="seconds of repetitions per operation"
    )
    ap.add_argument("--cache-from", type=int, default=100_000, help="cache stores this large")
    ap.add_argument("--no-cache", action="store_true", help="always load afresh")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="before measuring, let a server run retention until no expired notification is "
        "left (what a server running 10 minutes has done); results labelled <backend>_swept",
    )
    ap.add_argument(
        "--sweep-timeout", type=float, default=900.0, help="seconds the retention pass may take"
    )
    ap.add_argument(
        "--cache-key",
        default=None,
        help="use (and make) the stores cached under this key instead of this code's: the "
        "stores of a version whose data is the same (a change outside what is stored)",
    )
    ap.add_argument(
        "--load-only",
        action="store_true",
        help="load and cache each size's store (whatever its size) when not cached, measure "
        "nothing (bench/run.py --history N does this for its connect storms)",
    )
    ap.add_argument("--clear-cache", action="store_true", help="drop cached stores, then run")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait, before each pass, for other processes to go quiet (10; quick 2)",
    )
    ap.add_argument("--clarion", default=None, help="path to the clarion executable")
    ap.add_argument(
        "--plots", default=None, help="folder for bench-history.png (docs/img; --quick: none)"
    )
    ap.add_argument(
        "--include",
        action="append",
        default=[],
        help="an earlier history-*.json whose sizes and backends this run does not measure are "
        "carried into this report and plot (say, the 1,000,000 figures of a separate run)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    cfg = ap.parse_args()
    sizes = cfg.sizes or ("1000,10000" if cfg.quick else ",".join(map(str, SIZES)))
    cfg.sizes = sorted(int(x) for x in sizes.split(","))
    names = (cfg.backends or ("sqlite,postgres" if cfg.postgres else "sqlite")).split(",")
    if cfg.quiet_wait is None:
        cfg.quiet_wait = 2.0 if cfg.quick else 10.0
    if cfg.warmup is None:
        cfg.warmup = 2.0 if cfg.quick else WARMUP
    if cfg.plots is None:
        cfg.plots = "none" if cfg.quick else str(BENCH.parent / "docs" / "img")
    binary = find_clarion(cfg.clarion)
    if binary is None:
        raise SystemExit("clarion executable not found (make install)")
    cfg.binary = binary
    cfg.key = cfg.cache_key or code_key(binary)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.logdir = WORK / "logs" / f"history-{stamp}"
    cfg.logdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="clarion-history-"))
    backends: list[Backend] = []
    for name in names:
        if name == "sqlite":
            backends.append(Sqlite(tmp))
        elif name == "none":  # measure nothing: merge the --include results into one report
            continue
        elif name == "postgres":
            if not cfg.postgres:
                raise SystemExit("--backends postgres needs --postgres URL")
            backends.append(Postgres(cfg.postgres))
        else:
            raise SystemExit(f"unknown backend {name!r}")
    if cfg.clear_cache:
        clear_cache(backends)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the server has core 0
    report: dict[str, Any] = {
        "kind": "history",
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "sizes": cfg.sizes,
            "backends": names,
            "reps": cfg.reps,
            "samples": cfg.samples,
            "warmup_s": cfg.warmup,
            "timeout_s": cfg.timeout,
            "op_budget_s": cfg.op_budget,
            "seed": cfg.seed,
            "sweep": cfg.sweep,
            "code_key": cfg.key,
            "data_version": DATA_VERSION,
            "users": USERS,
            "topics": len(TOPICS),
            "followed_topics": len(FOLLOWED),
            "batch": BATCH,
            "in_flight": IN_FLIGHT,
        },
        "operations": OPS,
        "targets_ms": TARGETS,
        "results": {},
        "errors": {},
    }
    t_start = time.monotonic()
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("history", total=None)
            for backend in backends:
                for n in cfg.sizes:

                    def note(text: str, b: str = backend.name, n: int = n) -> None:
                        progress.update(task, description=f"{b} {n:,}: {text}")

                    try:
                        for label, res in run_size(backend, n, cfg, note).items():
                            report["results"].setdefault(label, {})[str(n)] = res
                            progress.console.print(f"{label} {n:,}: " + summary_line(res["ops"]))
                    except (BenchError, httpx.HTTPError, OSError) as exc:
                        report["errors"][f"{backend.name}@{n}"] = str(exc)
                        progress.console.print(f"[red]{backend.name} at {n:,}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - t_start, 1)
    if cfg.load_only:  # nothing measured: no report
        for where, exc in report["errors"].items():
            console.print(f"[red]{where}: {exc}")
        return 1 if report["errors"] else 0
    for path in cfg.include:
        include(report, Path(path))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(report)
    (out / f"history-{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"history-{stamp}.md").write_text(md + "\n")
    print(md)
    if cfg.plots != "none":
        try:
            made = plots(out / f"history-{stamp}.json", Path(cfg.plots), ensure_venv())
            console.print(f"plot: {', '.join(made)}")
        except BenchError as exc:
            console.print(f"[yellow]no plot: {exc}")
    console.print(f"wrote {out}/history-{stamp}.json and .md in {report['seconds']} s")
    return 1 if report["errors"] else 0


def include(report: dict[str, Any], path: Path) -> None:
    """Carries an earlier run's results for what this one did not measure into its report."""
    earlier = json.loads(path.read_text())
    for label, sizes in earlier["results"].items():
        mine = report["results"].setdefault(label, {})
        for n, res in sizes.items():
            if n not in mine:
                mine[n] = {**res, "from": path.name}
        report["results"][label] = dict(sorted(mine.items(), key=lambda kv: int(kv[0])))
    report["config"].setdefault("included", []).append(path.name)


def summary_line(ops: dict[str, Any]) -> str:
    return ", ".join(f"{k} {cell(v, 1)}" for k, v in ops.items())


def clear_cache(backends: list[Backend]) -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
    for b in backends:
        if isinstance(b, Postgres):
            rows = b.sql(
                "postgres", "SELECT datname FROM pg_database WHERE datname ~ '^clarion_hist_'"
            )
            for db in rows.split():
                b.sql("postgres", f"DROP DATABASE IF EXISTS {db}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        console.print(f"[red]{exc}")
        sys.exit(2)
