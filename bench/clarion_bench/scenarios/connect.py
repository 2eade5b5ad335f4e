"""Connect storms: handshakes per second, Clarion against Node `ws` and Socket.IO."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

from clarion_bench.loadgen import LoadGen, generator_load, source_addresses
from clarion_bench.noise import wait_quiet
from clarion_bench.proc import PER_WORKER
from clarion_bench.targets import Clarion, Target, b64url

CONNECT_PEERS = ("clarion", "node_ws", "node_socketio")
CONNECT_IN_FLIGHT = 100
REPLAY_EVENTS = 100


def _storm(
    target: Target,
    lg: LoadGen,
    n: int,
    addrs: list[str],
    note: Callable[[str], None],
    cursor: str | None = None,
) -> dict[str, Any]:
    """Open `n` connections, CONNECT_IN_FLIGHT handshakes at a time; the server's CPU per
    handshake comes from its CPU time over the storm."""
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    workers = max(1, math.ceil(n / PER_WORKER))
    per_worker = max(1, CONNECT_IN_FLIGHT // workers)  # the generator's lanes are per process
    tokens = target.tokens_file(n)
    lg.start_connect(target.ws_url(), target.protocol, n, tokens, addrs, per_worker, cursor)

    def on_progress(msg: dict[str, Any]) -> None:
        failed = f" ({msg['failed']} failed)" if msg["failed"] else ""
        note(f"{msg['ok']:,}/{n:,} connected{failed}")

    res = lg.wait("connected", 120 + n / 50, on_progress)
    wall = time.monotonic() - t0
    cpu = target.cpu_seconds() - cpu0
    hs = res.get("handshakeMs", {})
    return {
        "ok": res["ok"],
        "failed": res["failed"],
        "errors": res["errors"],
        "seconds": round(wall, 2),
        "per_second": round(res["ok"] / wall) if wall > 0 else None,
        "p50_ms": round(hs["p50"], 2) if hs.get("p50") is not None else None,
        "p99_ms": round(hs["p99"], 2) if hs.get("p99") is not None else None,
        "max_ms": round(hs.get("max") or 0, 1),
        "server_cpu_ms_per_handshake": round(1000 * cpu / max(1, res["ok"]), 3),
        "replayed": res.get("replayed", 0),
        "generator": generator_load(res, wall * 1000, 1),
    }


def connect_scenario(
    target: Target,
    n: int,
    cfg: argparse.Namespace,
    node: str,
    note: Callable[[str], None],
    replay: bool = True,
) -> dict[str, Any]:
    """A storm of `n` new connections on a fresh server (Clarion: each a distinct user with a
    JWT, an empty replay, until `welcome`). For Clarion at the smallest level, then:
    REPLAY_EVENTS notifications to `all` and `cfg.replay_conns` reconnects whose cursor is from
    before them, each replayed the 100 events before its `unread` (where its handshake ends);
    not with `replay` False (on a store of history, whose `all` holds far more than 100)."""
    out: dict[str, Any] = {"other_cpu_before": wait_quiet(cfg.quiet_wait, note)}
    note("starting server")
    target.start()
    lg: LoadGen | None = None
    try:
        time.sleep(cfg.settle)
        k = max(1, math.ceil(n / PER_WORKER))
        addrs = source_addresses(k)
        lg = LoadGen(node, k, cfg.logdir)
        out["storm"] = _storm(target, lg, n, addrs, note)
        first = n == min(cfg.connect_conns)
        if isinstance(target, Clarion) and replay and cfg.replay_conns and first:
            lg.close()
            lg = None
            note(f"publishing {REPLAY_EVENTS} notifications to all")
            target.publish(REPLAY_EVENTS, cfg.size, 950)
            m = min(n, cfg.replay_conns)
            lg = LoadGen(node, 1, cfg.logdir)
            cursor = b64url(json.dumps({"all": 0}, separators=(",", ":")).encode())
            replay = _storm(target, lg, m, addrs[:1], note, cursor)
            replay["events_each"] = round(replay["replayed"] / max(1, replay["ok"]), 1)
            out["replay"] = replay
    finally:
        if lg:
            lg.close()
        target.stop()
    return out
