#!/usr/bin/env python3
"""Soak: one Clarion server under mixed traffic for an hour, checked for leaks and losses.

    make soak                                                   # 10,000 connections, 60 min
    python bench/soak.py --conns 2000 --minutes 2 --rate 100    # a smoke run

One `clarion serve` on a fresh SQLite file, pinned to core 0 (as bench/run.py does); on core 1:
  - N WebSocket connections from bench/loadgen, each a distinct user; every minute `--churn`
    (5%) of them close and reopen with their last cursor, as a reloaded tab does, and any
    connection the server closes is reopened the same way;
  - a publisher (plain keep-alive HTTP/1.1) at `--rate` publishes/s, each to one random user
    or, `--all-share` of them, to `all`; each stamped with its send time;
  - a background of `--slowloris` connections sending partial headers and `--idle` WebSockets
    that never authenticate, from their own loopback address, reopened when the server drops
    them.
Every `--sample` seconds: the server's RSS and open fds (/proc/<pid>), the handshake p50/p99 of
the reconnects, publish-to-socket lag, deliveries so far against those expected from the 201s.
At the end every connection must hold, per stream, exactly what was acknowledged: each frame's
`seq` is checked against the last one on its stream (seqs are gap-free per stream), so a loss
shows as a gap or a shortfall and a duplicate as a seq that did not advance, replays included.
Results: bench/results/soak-<stamp>.json and .md, docs/img/bench-soak.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import clarion_bench as run  # the bench package (bench/clarion_bench): targets, generator, setup

BACKGROUND_ADDRESS = "127.0.0.254"  # the attackers' own address, so per-address caps hit them


class SoakTarget(run.Clarion):
    """Clarion with user tokens that outlive the soak (bench/run.py's last an hour)."""

    token_ttl = 3600

    def tokens_file(self, n: int) -> str:
        path = self.tmp / f"soak-tokens-{n}.txt"
        path.write_text(
            "\n".join(run.mint_hs256(self.secret, f"bench-{i}", self.token_ttl) for i in range(n))
        )
        return str(path)


class Publisher:
    """Publishes at a fixed pace; counts what each stream was acknowledged (201)."""

    def __init__(self, port: int, key: str, rate: float, users: int, all_share: float) -> None:
        self.host, self.port = "127.0.0.1", port
        self.rate, self.users, self.all_share = rate, users, all_share
        self.head = (
            f"POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.free: deque[_Conn] = deque()
        self.acked_all = 0
        self.acked_user: Counter[int] = Counter()
        self.statuses: Counter[str] = Counter()
        self.behind = 0  # ticks skipped because `in_flight` requests were still open
        self.answer_ms: list[float] = []  # since the last sample

    @property
    def acked(self) -> int:
        return self.acked_all + sum(self.acked_user.values())

    async def _request(self, conn: _Conn, body: bytes) -> str:
        """One POST on a kept-alive connection; the answer's status, its body read whole."""
        if conn.writer is None or conn.reader is None or conn.reader.at_eof():
            if conn.writer is not None:  # the server closed it while it was idle
                conn.writer.close()
            conn.reader, conn.writer = await asyncio.open_connection(self.host, self.port)
        conn.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)[1].decode()
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await conn.reader.readexactly(length)
        conn.usable = not close
        return status

    async def _one(self, conn: _Conn) -> None:
        to_all = random.random() < self.all_share
        user = random.randrange(self.users)
        audience: dict[str, Any] = {"all": True} if to_all else {"users": [f"bench-{user}"]}
        body = {**audience, "type": "soak", "title": "soak", "data": {"t": run.now_ms()}}
        t0 = time.monotonic()
        try:
            status = await asyncio.wait_for(self._request(conn, json.dumps(body).encode()), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status = type(exc).__name__
            conn.usable = False
        finally:
            if not conn.usable and conn.writer is not None:
                conn.writer.close()
                conn.writer = None
                conn.usable = True
            self.free.append(conn)
        self.statuses[status] += 1
        if status == "201":
            self.answer_ms.append((time.monotonic() - t0) * 1000)
            if to_all:
                self.acked_all += 1
            else:
                self.acked_user[user] += 1

    async def run(self, stop: asyncio.Event, in_flight: int = 64) -> None:
        """Ticks at `rate`; a tick finding all `in_flight` connections busy is skipped (`behind`).

        Plain keep-alive HTTP/1.1 on asyncio streams, not httpx: at 200/s with 64 in flight
        httpx's pool cost this process most of a core, on the machine the server runs on."""
        self.free = deque(_Conn() for _ in range(in_flight))
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / self.rate - time.monotonic()))
            if not self.free:
                self.behind += 1
                continue
            task = asyncio.ensure_future(self._one(self.free.popleft()))  # round robin: all warm
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        for conn in self.free:
            if conn.writer is not None:
                conn.writer.close()


class _Conn:
    """One kept-alive connection of the publisher, opened on first use and after a failure."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.usable = True


class Background:
    """Slowloris connections (headers that never end) and WebSockets that never send `auth`,
    each reopened when the server drops it; records how long the server held them."""

    def __init__(self, port: int, slowloris: int, idle: int) -> None:
        self.port, self.slowloris, self.idle = port, slowloris, idle
        self.opened: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # closed by the server
        self.held_max: dict[str, float] = {"slowloris": 0.0, "idle_ws": 0.0}
        self.refused: Counter[str] = Counter()  # could not connect or not upgraded

    async def _hold(self, kind: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(BACKGROUND_ADDRESS, 0)
                )
            except OSError:
                self.refused[kind] += 1
                await asyncio.sleep(1)
                continue
            self.opened[kind] += 1
            t0 = time.monotonic()
            try:
                if kind == "slowloris":
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                else:
                    writer.write(
                        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    )
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                    if b" 101 " not in head.split(b"\r\n", 1)[0]:
                        self.refused[kind] += 1
                await writer.drain()
                while not stop.is_set():
                    if kind == "slowloris":
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
                    try:
                        if not await asyncio.wait_for(reader.read(4096), 5):
                            break  # the server closed it
                    except TimeoutError:
                        continue
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
            finally:
                writer.close()
            if not stop.is_set():
                self.dropped[kind] += 1
                self.held_max[kind] = max(self.held_max[kind], time.monotonic() - t0)
                await asyncio.sleep(0.5)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            *(self._hold("slowloris", stop) for _ in range(self.slowloris)),
            *(self._hold("idle_ws", stop) for _ in range(self.idle)),
        )


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MB) and open file descriptors of the server process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, math.ceil(q * len(s)) - 1)], 2)


def rnd(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def completeness(rows: list[list[int]], pub: Publisher) -> dict[str, int]:
    """Per connection and stream, distinct events received against 201s: a shortfall is
    lost, a surplus is a publish that was stored though its answer never came."""
    lost = extra = dups = 0
    for i, (_last_all, got_all, _last_own, got_own, dup) in enumerate(rows):
        for want, got in ((pub.acked_all, got_all), (pub.acked_user[i], got_own)):
            lost += max(0, want - got)
            extra += max(0, got - want)
        dups += dup
    expected = pub.acked_all * len(rows) + sum(pub.acked_user[i] for i in range(len(rows)))
    received = sum(r[1] + r[3] for r in rows)
    return {
        "expected": expected,
        "received": received,
        "lost": lost,
        "duplicated": dups,
        "unacknowledged": extra,
    }


def markdown(report: dict[str, Any]) -> str:
    c, s, f = report["config"], report["samples"], report["final"]
    first, last = s[0], s[-1]
    hs = [p["handshake_p99_ms"] for p in s if p["handshake_p99_ms"] is not None]
    lag = [p["lag_p99_ms"] for p in s if p["lag_p99_ms"] is not None]
    bg = report["background"]
    ok = "yes" if f["lost"] == 0 and f["duplicated"] == 0 and f["gaps"] == 0 else "**NO**"
    return "\n".join(
        [
            f"# Soak {report['stamp']}",
            "",
            f"{c['conns']:,} WebSocket connections, {c['minutes']} min, {c['rate']} publishes/s "
            f"({c['all_share']:.0%} to `all`), {c['churn']:.0%} reconnecting every "
            f"{c['churn_every']:g} s, "
            f"{c['slowloris']} slowloris + {c['idle']} idle unauthenticated WebSockets.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| publishes acknowledged (201) | {f['acknowledged']:,} "
            f"(other answers: {f['other_statuses'] or 'none'}; ticks behind: {f['behind']}) |",
            f"| deliveries expected / received | {f['expected']:,} / {f['received']:,} |",
            f"| lost / duplicated / seq gaps | {f['lost']} / {f['duplicated']} / {f['gaps']} "
            f"(gaps found on: {f['gaps_by']}; unparsed frames: {f['unparsed_frames']}) |",
            f"| complete, exactly once | {ok} |",
            f"| reconnects (failed) | {f['reconnects']:,} ({f['reconnect_failed']}) |",
            f"| reconnect handshake p99, worst window | {max(hs) if hs else '-'} ms |",
            f"| publish-to-socket lag p99, worst window | {max(lag) if lag else '-'} ms |",
            f"| server RSS first / last / max sample | {first['rss_mb']} / {last['rss_mb']} / "
            f"{max(p['rss_mb'] for p in s)} MB |",
            f"| server fds first / last / max sample | {first['fds']} / {last['fds']} / "
            f"{max(p['fds'] for p in s)} |",
            f"| slowloris opened / dropped by server / longest held | "
            f"{bg['opened'].get('slowloris', 0)} / {bg['dropped'].get('slowloris', 0)} / "
            f"{bg['held_max_s']['slowloris']} s |",
            f"| idle WebSockets opened / dropped / longest held | "
            f"{bg['opened'].get('idle_ws', 0)} / {bg['dropped'].get('idle_ws', 0)} / "
            f"{bg['held_max_s']['idle_ws']} s |",
            "",
            "Samples (every row of the JSON's `samples`, thinned to at most 20):",
            "",
            "| s | RSS MB | fds | open | reconnect p50/p99 ms | lag p50/p99 ms | recv/expected |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {p['t']:.0f} | {p['rss_mb']} | {p['fds']} | {p['open']:,} | "
                f"{p['handshake_p50_ms']}/{p['handshake_p99_ms']} | "
                f"{p['lag_p50_ms']}/{p['lag_p99_ms']} | {p['received']:,}/{p['expected']:,} |"
                for p in s[:: max(1, math.ceil(len(s) / 20))]
            ),
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=float, default=200, help="publishes per second")
    ap.add_argument("--all-share", type=float, default=0.01, help="share of publishes to `all`")
    ap.add_argument("--churn", type=float, default=0.05, help="share reconnecting each period")
    ap.add_argument("--churn-every", type=float, default=60, help="seconds between reconnects")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples")
    ap.add_argument("--slowloris", type=int, default=50)
    ap.add_argument("--idle", type=int, default=50, help="idle unauthenticated WebSockets")
    ap.add_argument("--clarion", help="path of the clarion executable (default: this venv's)")
    ap.add_argument("--plots", default=str(run.BENCH.parent / "docs" / "img"), help="DIR|none")
    cfg = ap.parse_args()

    binary = run.find_clarion(cfg.clarion)
    if binary is None:
        raise run.BenchError("no clarion executable; run `make install` or pass --clarion")
    node = run.ensure_node()
    run.raise_fd_limit()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    logdir = run.WORK / "logs" / f"soak-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    note = run.console.log

    srv = SoakTarget(logdir, binary, 1)
    srv.name = "clarion-soak"
    srv.token_ttl = int(cfg.minutes * 60) + 3600
    srv.start()
    assert srv.proc is not None
    pid = srv.proc.pid  # taskset execs the server: same pid
    workers = max(1, math.ceil(cfg.conns / run.PER_WORKER))
    lg = run.LoadGen(node, workers, logdir)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    pub = Publisher(
        srv.port,
        srv.api_key,
        cfg.rate,
        cfg.conns,
        cfg.all_share,
    )
    bg = Background(srv.port, cfg.slowloris, cfg.idle)
    samples: list[dict[str, Any]] = []
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    try:
        idle = proc_stats(pid)
        note(f"server idle: {idle}; connecting {cfg.conns:,}")
        conn = lg.connect(
            srv.ws_url(),
            "clarion",
            cfg.conns,
            srv.tokens_file(cfg.conns),
            lambda m: None,
            run.source_addresses(workers),
        )
        if conn["failed"]:
            raise run.BenchError(f"{conn['failed']} connections failed: {conn['errors']}")
        note(f"connected in {conn['ms'] / 1000:.1f} s: {proc_stats(pid)}")
        lg.send({"cmd": "soak"})
        lg.wait("soaking", 30)
        thread.start()
        jobs = [
            asyncio.run_coroutine_threadsafe(pub.run(stop), loop),
            asyncio.run_coroutine_threadsafe(bg.run(stop), loop),
        ]
        t0 = time.monotonic()
        end = t0 + cfg.minutes * 60
        next_churn = t0 + cfg.churn_every
        draining = False
        drain_end = drained_at = end + 30  # after the last publish, time for the last ones
        while True:
            now = time.monotonic()
            if now >= next_churn and now < end:
                lg.send({"cmd": "churn", "fraction": cfg.churn, "concurrency": 20})
                lg.wait("churning", 30)
                next_churn += cfg.churn_every
            due = drained_at + 1 if draining else t0 + (len(samples) + 1) * cfg.sample
            time.sleep(max(0.0, min(next_churn, due) - now))
            if time.monotonic() < due:
                continue
            lg.send({"cmd": "sample"})
            m = lg.wait("sampled", 60)
            answers, pub.answer_ms = pub.answer_ms, []
            expected = pub.acked_all * cfg.conns + sum(pub.acked_user.values())
            point = {
                "t": round(time.monotonic() - t0, 1),
                **proc_stats(pid),
                "open": m["open"],
                "received": m["received"],
                "expected": expected,
                "dups": m["dups"],
                "gaps": m["gaps"],
                "reconnects": m["reconnects"],
                "handshake_p50_ms": rnd(m["handshakeMs"]["p50"]),
                "handshake_p99_ms": rnd(m["handshakeMs"]["p99"]),
                "lag_p50_ms": rnd(m["lagMs"]["p50"]),
                "lag_p99_ms": rnd(m["lagMs"]["p99"]),
                "publish_201_p99_ms": pct(answers, 0.99),
                "generator_loop_p99_ms": rnd(m["loopDelayMs"]["p99"]),
            }
            samples.append(point)
            note(
                f"{point['t']:>6.0f}s rss {point['rss_mb']} MB fds {point['fds']} open "
                f"{point['open']:,} hs p99 {point['handshake_p99_ms']} lag p99 "
                f"{point['lag_p99_ms']} recv {point['received']:,}/{expected:,}"
            )
            if draining and (m["received"] >= expected or time.monotonic() > drain_end):
                break
            if draining:
                drained_at = time.monotonic()
            elif time.monotonic() >= end:  # stop publishing; sample each second until complete
                draining = True
                loop.call_soon_threadsafe(stop.set)
                for job in jobs:
                    job.result(60)
                drained_at = time.monotonic()
                drain_end = drained_at + 30
        lg.send({"cmd": "verify"})
        verified = lg.wait("verified", 60)
        rows = verified["rows"]
        final = {
            **completeness(rows, pub),
            "gaps": samples[-1]["gaps"],
            "gaps_by": verified["gapsBy"],
            "unparsed_frames": m["bad"],  # frames the generator could not parse as JSON
            "acknowledged": pub.acked,
            "acknowledged_all": pub.acked_all,
            "other_statuses": {k: v for k, v in pub.statuses.items() if k != "201"},
            "behind": pub.behind,
            "reconnects": m["reconnects"],
            "reconnect_failed": m["reconnectFailed"],
            "reconnect_errors": m["errors"],
            "close_codes": m["closeCodes"],
        }
    finally:
        loop.call_soon_threadsafe(stop.set)
        lg.close()
        srv.stop()
        loop.call_soon_threadsafe(loop.stop)
    report = {
        "kind": "soak",
        "stamp": stamp,
        "config": {k: v for k, v in vars(cfg).items() if k not in ("clarion", "plots")},
        "machine": run.machine(),
        "server_idle": idle,
        "connect": {"ms": conn["ms"], "handshake_ms": conn["handshakeMs"]},
        "samples": samples,
        "final": final,
        "background": {
            "opened": dict(bg.opened),
            "dropped": dict(bg.dropped),
            "refused": dict(bg.refused),
            "held_max_s": {k: round(v, 1) for k, v in bg.held_max.items()},
        },
    }
    run.RESULTS.mkdir(exist_ok=True)
    json_path = run.RESULTS / f"soak-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1))
    (run.RESULTS / f"soak-{stamp}.md").write_text(markdown(report))
    note(f"wrote {json_path} and .md")
    if cfg.plots != "none":
        note(f"plots: {run.plots(json_path, Path(cfg.plots), run.ensure_venv())}")
    print(markdown(report))
    return 0 if final["lost"] == 0 and final["duplicated"] == 0 and final["gaps"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
