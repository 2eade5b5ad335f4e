#!/usr/bin/env python3
"""Clarion's benchmark: measures Clarion and its peers on this machine, in one run, and writes a
report (bench/results/<stamp>.json and .md).

    python bench/run.py              # everything (about 10-15 minutes)
    python bench/run.py --quick      # a smaller version, under 2 minutes
    python bench/run.py --peers clarion,node_socketio --conns 10000 --scenarios fanout

Each server runs alone, pinned to core 0; the load generator (bench/loadgen, Node.js + ws) runs
pinned to core 1. The driver installs what the peers and the generator need into bench/.work
(npm for Node, a venv for the Python peers). Clarion is the `clarion` next to this Python (or
--clarion PATH). Imports: stdlib, rich, httpx, psutil.

Scenarios, for each server and each connection count:
  memory  idle memory per WebSocket connection: (RSS with N idle connections - RSS with none) / N
  fanout  broadcast bursts to all N connections: deliveries/s from the first to the last receipt,
          and the latency of each delivery (receive time minus the send stamp `t`)
  steady  a fixed delivery rate (default 20,000/s) for a while: latency percentiles
Two reference servers bound what can be measured: `raw` writes pre-encoded frames to each socket
(one write per delivery, no framing work: the loopback ceiling of any server doing one write per
delivery), and its coalesced variant writes a whole burst per socket at once (what the generator
can receive at all: the generator ceiling). A result above 80% of the generator ceiling is
flagged generator-bound.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clarion_bench.proc import (
    BENCH,
    RESULTS,
    WORK,
    BenchError,
    console,
    ensure_node,
    ensure_venv,
    find_clarion,
    machine,
    psql,
    raise_fd_limit,
)
from clarion_bench.report import fmt_rate, markdown, plots
from clarion_bench.scenarios.capacity import capacity
from clarion_bench.scenarios.connect import CONNECT_PEERS, connect_scenario
from clarion_bench.scenarios.durable import durable
from clarion_bench.scenarios.gc import latency_gc_default
from clarion_bench.scenarios.latency import personal_latency
from clarion_bench.scenarios.level import run_level
from clarion_bench.scenarios.memory import transport_memory
from clarion_bench.stores import ensure_history_sqlite
from clarion_bench.targets import (
    ALL_PEERS,
    LABELS,
    PEERS,
    Clarion,
    Peer,
    StoredClarion,
    Target,
)


def run_connect(
    targets: list[Target],
    cfg: argparse.Namespace,
    node: str,
    report: dict[str, Any],
    progress: Progress,
    step: Any,
) -> None:
    """Every level, each server in turn (so the servers of one level see the same machine)."""
    out: dict[str, dict[str, Any]] = {}
    report["connect"] = out
    store = None
    if cfg.history and any(isinstance(t, Clarion) for t in targets):
        clarion = next(t for t in targets if isinstance(t, Clarion))
        progress.update(step, description=f"connect: the store of {cfg.history:,} (history.py)")
        store = cfg.history_store or ensure_history_sqlite(cfg.history, clarion.binary)
        report["connect_history"] = {"stored": cfg.history, "store": store.name, "levels": {}}
    for n in cfg.connect_conns:
        if store is not None:
            clarion = next(t for t in targets if isinstance(t, Clarion))
            run_connect_history(clarion.binary, store, n, cfg, node, report, progress, step)
        for target in [t for t in targets if t.name in CONNECT_PEERS]:
            if store is not None and isinstance(target, Clarion):
                continue  # measured on the empty store by run_connect_history

            def note(text: str, name: str = target.name, n: int = n) -> None:
                progress.update(step, description=f"connect {name} {n:,}: {text}")

            try:
                level = connect_scenario(target, n, cfg, node, note)
                out.setdefault(target.name, {})[str(n)] = level
                s = level["storm"]
                progress.console.print(
                    f"connect {LABELS.get(target.name, target.name)} at {n:,}: "
                    f"{fmt_rate(s['per_second'])} handshakes/s, p99 {s['p99_ms']} ms"
                )
            except (BenchError, httpx.HTTPError, OSError) as exc:
                report["errors"][f"connect:{target.name}@{n}"] = str(exc)
                progress.console.print(f"[red]connect {target.name} at {n:,}: {exc}")


def run_connect_history(
    binary: Path,
    store: Path,
    n: int,
    cfg: argparse.Namespace,
    node: str,
    report: dict[str, Any],
    progress: Progress,
    step: Any,
) -> None:
    """Storms of `n` on Clarion with an empty store and with a copy of `store`, alternated
    `cfg.history_rounds` times (empty, history, empty, history...), so both meet the same
    machine; the same user names (the store's users) in both. The first empty storm, with
    its replay, is also Clarion's row of the connect table."""
    rounds: list[dict[str, Any]] = report["connect_history"]["levels"].setdefault(str(n), [])
    for r in range(cfg.history_rounds):
        pair: dict[str, Any] = {}
        for label, kept in (("empty", None), ("history", store)):

            def note(text: str, label: str = label, r: int = r) -> None:
                progress.update(step, description=f"connect clarion {n:,} {label} #{r}: {text}")

            target = StoredClarion(cfg.logdir, binary, kept)
            try:
                first = r == 0 and kept is None
                level = connect_scenario(target, n, cfg, node, note, replay=first)
            except (BenchError, httpx.HTTPError, OSError) as exc:
                report["errors"][f"connect:clarion-{label}@{n}#{r}"] = str(exc)
                progress.console.print(f"[red]connect clarion {label} at {n:,}: {exc}")
                continue
            finally:
                shutil.rmtree(target.tmp, ignore_errors=True)
            if first:
                report["connect"].setdefault("clarion", {})[str(n)] = level
            pair[label] = level["storm"]
            s = level["storm"]
            progress.console.print(
                f"connect Clarion at {n:,}, {label} store (round {r + 1}): "
                f"{fmt_rate(s['per_second'])} handshakes/s, "
                f"{s['server_cpu_ms_per_handshake']} ms CPU each, p99 {s['p99_ms']} ms"
            )
        rounds.append(pair)


def run_extras(
    clarion: Clarion,
    cfg: argparse.Namespace,
    node: str,
    report: dict[str, Any],
    progress: Progress,
    step: Any,
) -> None:
    """Clarion-only scenarios, each on a fresh server."""
    extra: dict[str, Any] = {}
    report["clarion_extra"] = extra

    def note(text: str) -> None:
        progress.update(step, description=f"clarion: {text}")

    def attempt(key: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            extra[key] = fn()
            progress.console.print(f"Clarion {key}: done")
        except (BenchError, httpx.HTTPError, OSError, subprocess.TimeoutExpired) as exc:
            report["errors"][f"clarion@{key}"] = str(exc)
            progress.console.print(f"[red]clarion {key}: {exc}")

    if "durable" in cfg.scenarios:
        attempt("durable_sqlite", lambda: durable(clarion, cfg, node, note))
        if cfg.postgres:
            base = cfg.postgres.rstrip("/")
            db = f"bench_{secrets.token_hex(4)}"
            pg = Clarion(cfg.logdir, clarion.binary, 1, f"{base}/{db}")
            try:
                psql(base, f"CREATE DATABASE {db}")
                attempt("durable_postgres", lambda: durable(pg, cfg, node, note))
            finally:
                with contextlib.suppress(BenchError, OSError, subprocess.TimeoutExpired):
                    psql(base, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    if "latency" in cfg.scenarios:
        attempt("latency", lambda: personal_latency(clarion.binary, cfg, node, note))
    if "gc" in cfg.scenarios:  # the same with Python's default garbage collector settings
        attempt("latency_gc_default", lambda: latency_gc_default(clarion.binary, cfg, node, note))
    if "capacity" in cfg.scenarios:
        attempt("capacity", lambda: capacity(clarion.binary, cfg, node, note))
    if "transports" in cfg.scenarios:
        # Per-connection memory is flat from a few thousand on; 5,000 keeps the long-polling
        # run (each poll a full HTTP request) from taking minutes of the bench's 15.
        n = cfg.transport_conns or min(max(cfg.conns), 5000)
        for kind in ("sse", "poll"):
            attempt(
                f"memory_{kind}",
                lambda kind=kind: transport_memory(clarion, kind, n, cfg, node, note),
            )


def add_scale_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="connections held at once over several Clarion processes (40000; --quick: 4000)",
    )
    ap.add_argument(
        "--capacity-per-process",
        type=int,
        default=None,
        help="most connections one process is given (open-file limit - 500; --quick: 2000)",
    )
    ap.add_argument("--capacity-hold", type=float, default=5.0, help="seconds to hold them")
    ap.add_argument(
        "--latency-users", type=int, default=None, help="users connected (10000; --quick: 1000)"
    )
    ap.add_argument(
        "--latency-rates",
        default=None,
        help="personal notifications/s, one run each (200,500; --quick: 500)",
    )
    ap.add_argument("--latency-seconds", type=float, default=None, help="per run (6; quick 4)")


def scale_config(cfg: argparse.Namespace, fd_limit: int) -> None:
    """Sizes of the capacity and latency scenarios. Each capacity server is filled up to what its
    file limit allows, the last one gets the rest: 40,000 = 19,500 + 19,500 + 1,000. The
    handshakes of the two big servers then run in parallel, one per core."""
    total = cfg.capacity or (4000 if cfg.quick else 40_000)
    per = cfg.capacity_per_process or (2000 if cfg.quick else fd_limit - 500)
    cfg.capacity_shares = [min(per, total - i) for i in range(0, total, per)]
    cfg.latency_users = cfg.latency_users or (1000 if cfg.quick else 10_000)
    cfg.latency_rates = [
        int(x) for x in (cfg.latency_rates or ("500" if cfg.quick else "200,500")).split(",")
    ]
    cfg.latency_seconds = cfg.latency_seconds or (4.0 if cfg.quick else 6.0)


# What each mode runs. `make bench` (full) must stay under 15 minutes: the connect storms (~6-8
# min) and the 40,000-connection capacity run (~7 min) are in `all` (`make bench-full`).
QUICK_SCENARIOS = "fanout,memory,connect,durable,latency,capacity"
FULL_SCENARIOS = "fanout,memory,steady,durable,transports,latency"
ALL_SCENARIOS = FULL_SCENARIOS + ",connect,capacity"


def scenarios(arg: str | None, quick: bool) -> set[str]:
    """The scenarios to run: as given (`all`: every one but the opt-in `gc`), or the mode's."""
    if arg == "all":
        arg = ALL_SCENARIOS
    return set((arg or (QUICK_SCENARIOS if quick else FULL_SCENARIOS)).split(","))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run, under 2 minutes")
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="servers to measure, in order; 'all' adds the Node peers' paused variants "
        f"(default {','.join(PEERS)})",
    )
    ap.add_argument(
        "--scenarios",
        default=None,
        help=f"default {FULL_SCENARIOS} (--quick: {QUICK_SCENARIOS}); 'all' adds connect and "
        "capacity; gc is opt-in (memory is always on)",
    )
    ap.add_argument("--conns", default=None, help="connection counts (1000,10000; --quick: 1000)")
    ap.add_argument("--clarion", default=None, help="path to the clarion executable")
    ap.add_argument("--baseline", default="clarion", help="server the ratios compare to")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--deliveries", type=int, default=None, help="deliveries per burst")
    ap.add_argument("--reps", type=int, default=None, help="measured bursts per level")
    ap.add_argument("--rate", type=int, default=20_000, help="steady deliveries/s")
    ap.add_argument("--steady-seconds", type=float, default=None)
    ap.add_argument(
        "--publish-concurrency",
        default=None,
        help="Clarion: POST /v1/notifications in flight during a fan-out burst, one measurement "
        "each; the first is the headline (default 4,16; 1 waits for each 201)",
    )
    ap.add_argument("--durable-concurrency", type=int, default=64, help="POSTs in flight")
    ap.add_argument("--durable-seconds", type=float, default=None, help="per durable run")
    ap.add_argument(
        "--postgres",
        default=None,
        help="also run the durable scenario on PostgreSQL: a server URL such as "
        "postgresql://postgres@127.0.0.1:5432 (a fresh database is created and dropped)",
    )
    ap.add_argument(
        "--plots", default=None, help="folder for the PNG plots (full mode: docs/img; 'none')"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait, before each server, for other processes to go quiet",
    )
    ap.add_argument("--out", default=str(RESULTS), help="folder for the results")
    ap.add_argument(
        "--connect-conns",
        default=None,
        help="connect scenario: connections per storm (5000,19500; --quick: 2000)",
    )
    ap.add_argument(
        "--transport-conns",
        type=int,
        default=None,
        help="transports scenario: SSE streams and long-polls held (least of --conns and 5000)",
    )
    ap.add_argument(
        "--replay-conns",
        type=int,
        default=None,
        help="connect scenario: Clarion reconnects replaying 100 events (1000; --quick: 300)",
    )
    ap.add_argument(
        "--history",
        type=int,
        default=0,
        help="connect scenario: storm Clarion on a store of this many notifications as "
        "bench/history.py builds them (its cached store; loaded first if missing), alternated "
        "with an empty store (0: not)",
    )
    ap.add_argument(
        "--history-store",
        type=Path,
        default=None,
        help="connect scenario with --history: this SQLite file instead of the cached store "
        "(a store of another code version, whose data is the same; any populated store)",
    )
    ap.add_argument(
        "--history-rounds",
        type=int,
        default=2,
        help="connect scenario with --history: empty/history pairs per connection count (2)",
    )
    add_scale_arguments(ap)
    cfg = ap.parse_args()
    cfg.mode = "quick" if cfg.quick else "full"
    cfg.conns = sorted(
        int(x) for x in (cfg.conns or ("1000" if cfg.quick else "1000,10000")).split(",")
    )
    cfg.scenarios = scenarios(cfg.scenarios, cfg.quick)
    cfg.publish_concurrency = [int(x) for x in (cfg.publish_concurrency or "4,16").split(",")]
    cfg.connect_conns = [
        int(x) for x in (cfg.connect_conns or ("2000" if cfg.quick else "5000,19500")).split(",")
    ]
    if cfg.replay_conns is None:
        cfg.replay_conns = 300 if cfg.quick else 1000
    cfg.durable_seconds = cfg.durable_seconds or (3.0 if cfg.quick else 5.0)
    if cfg.plots is None:
        cfg.plots = "none" if cfg.quick else str(BENCH.parent / "docs" / "img")
    cfg.deliveries = cfg.deliveries or (50_000 if cfg.quick else 200_000)
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.burst_seconds = 3 if cfg.quick else 8
    cfg.steady_seconds = cfg.steady_seconds or (5 if cfg.quick else 6)
    cfg.settle = 1.0 if cfg.quick else 2.0
    cfg.max_bursts = cfg.reps if cfg.quick else 2 * cfg.reps  # noisy bursts are repeated
    if cfg.quiet_wait is None:
        cfg.quiet_wait = 2.0 if cfg.quick else 60.0

    limit = raise_fd_limit()
    scale_config(cfg, limit)
    if limit < max(cfg.conns) + 1000:
        console.print(
            f"[yellow]open-file limit is {limit}: {max(cfg.conns):,} connections may not fit"
        )
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the driver shares the generator's core, not the server's
    node = ensure_node()
    python = ensure_venv()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.logdir = WORK / "logs" / stamp
    cfg.logdir.mkdir(parents=True, exist_ok=True)

    targets: list[Target] = []
    for name in ALL_PEERS if cfg.peers == "all" else cfg.peers.split(","):
        if name == "clarion":
            binary = find_clarion(cfg.clarion)
            if not binary:
                console.print("[yellow]no `clarion` executable found: Clarion is skipped")
                continue
            targets.append(Clarion(cfg.logdir, binary, cfg.publish_concurrency[0]))
        elif name in ALL_PEERS:
            targets.append(Peer(name, cfg.logdir, node, python))
        else:
            raise BenchError(f"unknown peer {name!r}; known: {', '.join(ALL_PEERS)}")

    report: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "mode": cfg.mode,
            "conns": cfg.conns,
            "size": cfg.size,
            "deliveries": cfg.deliveries,
            "reps": cfg.reps,
            "rate": cfg.rate,
            "steady_seconds": cfg.steady_seconds,
            "scenarios": sorted(cfg.scenarios),
            "publish_concurrency": cfg.publish_concurrency,
            "durable_concurrency": cfg.durable_concurrency,
            "durable_seconds": cfg.durable_seconds,
            "capacity_shares": cfg.capacity_shares,
            "latency_users": cfg.latency_users,
            "latency_rates": cfg.latency_rates,
            "latency_seconds": cfg.latency_seconds,
            "connect_conns": cfg.connect_conns,
            "replay_conns": cfg.replay_conns,
            "history": cfg.history,
            "history_rounds": cfg.history_rounds,
        },
        "results": {},
        "ceilings": {},
        "errors": {},
    }
    report["baseline"] = (
        cfg.baseline
        if any(t.name == cfg.baseline for t in targets)
        else ("node_ws" if any(t.name == "node_ws" for t in targets) else "")
    )
    t_start = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        levels = cfg.scenarios & {"fanout", "memory", "steady"}
        overall = progress.add_task("benchmark", total=len(targets) * len(cfg.conns))
        step = progress.add_task("", total=None)
        for target in targets if levels else []:
            report["results"][target.name] = {}
            for n in cfg.conns:

                def note(text: str, name: str = target.name, n: int = n) -> None:
                    progress.update(step, description=f"{name} {n:,}: {text}")

                try:
                    level = run_level(target, n, cfg, node, note, progress, step)
                    report["results"][target.name][str(n)] = level
                    if target.name == "raw":
                        report["ceilings"][str(n)] = {
                            "loopback": level.get("fanout", {}).get("rate"),
                            "generator": level.get("generator_ceiling", {}).get("rate"),
                        }
                    f = level.get("fanout")
                    progress.console.print(
                        f"{LABELS.get(target.name, target.name)} at {n:,}: "
                        + (f"{fmt_rate(f['rate'])} deliveries/s, " if f else "")
                        + f"{level['memory']['kb_per_conn']:.1f} KB/conn"
                    )
                except (BenchError, httpx.HTTPError, OSError) as exc:
                    report["errors"][f"{target.name}@{n}"] = str(exc)
                    progress.console.print(f"[red]{target.name} at {n:,}: {exc}")
                progress.advance(overall)
        if "connect" in cfg.scenarios:
            run_connect(targets, cfg, node, report, progress, step)
        clarion = next((t for t in targets if isinstance(t, Clarion)), None)
        if clarion:
            run_extras(clarion, cfg, node, report, progress, step)
    report["seconds"] = round(time.monotonic() - t_start, 1)
    md = markdown(report)
    (out_dir / f"{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{stamp}.md").write_text(md + "\n")
    print(md)
    if cfg.plots != "none":
        try:
            made = plots(out_dir / f"{stamp}.json", Path(cfg.plots), python)
            console.print(f"plots: {', '.join(made)}")
        except BenchError as exc:
            console.print(f"[yellow]no plots: {exc}")
    console.print(
        f"wrote {out_dir / stamp}.json and .md in {report['seconds']} s (logs in {cfg.logdir})"
    )
    return 1 if report["errors"] else 0


def cli() -> int:
    """main(), with a setup failure reported as one line and exit status 2."""
    try:
        return main()
    except BenchError as exc:
        console.print(f"[red]{exc}")
        return 2
