"""The report: Markdown tables, ratios, targets, and the plots (bench/plots.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from clarion_bench.noise import NOISY
from clarion_bench.proc import BENCH, PER_WORKER, console, run_checked
from clarion_bench.scenarios.connect import CONNECT_IN_FLIGHT, CONNECT_PEERS, REPLAY_EVENTS
from clarion_bench.targets import LABELS

GENERATOR_BOUND = 0.8


def connect_markdown(report: dict[str, Any]) -> list[str]:
    res: dict[str, dict[str, Any]] = report.get("connect") or {}
    if not res:
        return []
    levels = sorted({int(n) for r in res.values() for n in r})
    lines = [
        "## Connect storms",
        "",
        f"New WebSocket connections, {CONNECT_IN_FLIGHT} handshakes in flight, server on core 0, "
        "generator on core 1, a fresh server per row. A handshake ends when the connection is "
        "usable: Clarion at `welcome` (first-frame JWT auth, follows, snapshot, an empty "
        "replay), Socket.IO at its `40` connect answer, `ws` at the upgrade. Server CPU is its "
        "CPU time over the storm per handshake.",
        "",
        "| server | connections | handshakes/s | p50 ms | p99 ms | server CPU ms/handshake "
        "| failed | Clarion's rate over it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in levels:
        mine = res.get("clarion", {}).get(str(n), {}).get("storm", {}).get("per_second")
        for name in CONNECT_PEERS:
            s = res.get(name, {}).get(str(n), {}).get("storm")
            if not s:
                continue
            flag = " (generator saturated)" if s["generator"]["saturated"] else ""
            lines.append(
                f"| {LABELS.get(name, name)} | {n:,} | {fmt_rate(s['per_second'])}{flag} | "
                f"{s['p50_ms']} | {s['p99_ms']} | {s['server_cpu_ms_per_handshake']} | "
                f"{s['failed']} | {ratio(mine, s['per_second']) if name != 'clarion' else ''} |"
            )
    replays = [(n, r["replay"]) for n, r in res.get("clarion", {}).items() if "replay" in r]
    if replays:
        lines += [
            "",
            f"Clarion reconnects with a cursor that needs a replay of {REPLAY_EVENTS} events (to "
            "`unread`, which follows the replay):",
            "",
            "| after the storm of | reconnects | handshakes/s | p50 ms | p99 ms "
            "| server CPU ms/handshake | events replayed each | failed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, r in replays:
            lines.append(
                f"| {int(n):,} | {r['ok']:,} | {fmt_rate(r['per_second'])} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['server_cpu_ms_per_handshake']} | {r['events_each']} | "
                f"{r['failed']} |"
            )
    return [*lines, ""]


def history_ratios(rounds: list[dict[str, Any]]) -> dict[str, float | None]:
    """Over the empty/history pairs of one connection count: handshakes/s with history over
    handshakes/s without (all rounds' handshakes over all rounds' seconds, each side), and
    the server's CPU per handshake likewise (the mean over the rounds, history over empty)."""
    pairs = [p for p in rounds if "empty" in p and "history" in p]

    def rate(side: str) -> float:
        return sum(p[side]["ok"] for p in pairs) / max(1e-9, sum(p[side]["seconds"] for p in pairs))

    def cpu(side: str) -> float:
        return sum(p[side]["server_cpu_ms_per_handshake"] for p in pairs) / max(1, len(pairs))

    if not pairs or not rate("empty") or not cpu("empty"):
        return {"rate": None, "cpu": None}
    return {
        "rate": round(rate("history") / rate("empty"), 3),
        "cpu": round(cpu("history") / cpu("empty"), 3),
    }


def connect_history_markdown(report: dict[str, Any]) -> list[str]:
    hist = report.get("connect_history")
    if not hist or not hist["levels"]:
        return []
    lines = [
        f"## Connect storms against {hist['stored']:,} notifications stored",
        "",
        f"Clarion alone, each storm on a fresh server: an empty store, then a copy of "
        f"bench/history.py's store of {hist['stored']:,} (`{hist['store']}`), alternated; the "
        "same users (`u0`, `u1`..., in the store topic followers from its start, with personal "
        "notifications) in both. Handshake: first-frame JWT auth to `welcome` (follows, the "
        "snapshot with the unread count, an empty replay).",
        "",
        "| connections | round | store | handshakes/s | p50 ms | p99 ms "
        "| server CPU ms/handshake | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, rounds in hist["levels"].items():
        for r, pair in enumerate(rounds, 1):
            for side in ("empty", "history"):
                s = pair.get(side)
                if not s:
                    continue
                flag = " (generator saturated)" if s["generator"]["saturated"] else ""
                what = "empty" if side == "empty" else f"{hist['stored']:,} stored"
                lines.append(
                    f"| {int(n):,} | {r} | {what} | {fmt_rate(s['per_second'])}{flag} | "
                    f"{s['p50_ms']} | {s['p99_ms']} | {s['server_cpu_ms_per_handshake']} | "
                    f"{s['failed']} |"
                )
    lines += ["", "| connections | handshakes/s, history / empty | CPU, history / empty |"]
    lines += ["|---|---|---|"]
    for n, rounds in hist["levels"].items():
        q = history_ratios(rounds)
        lines.append(f"| {int(n):,} | {q['rate'] or '-'} | {q['cpu'] or '-'} |")
    return [*lines, ""]


def connect_checks(report: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    res = report.get("connect") or {}
    checks = []
    for n, level in res.get("clarion", {}).items():
        mine = level["storm"]["per_second"]
        sio = res.get("node_socketio", {}).get(n, {}).get("storm", {}).get("per_second")
        checks.append(
            (
                f"connect storm of {int(n):,}: handshakes/s >= Node Socket.IO in the same run",
                f"{fmt_rate(mine)} vs {fmt_rate(sio)}",
                bool(mine and sio and mine >= sio),
            )
        )
    hist = report.get("connect_history") or {}
    for n, rounds in (hist.get("levels") or {}).items():
        q = history_ratios(rounds)
        checks.append(
            (
                f"connect storm of {int(n):,} at {hist['stored']:,} stored: handshakes/s within "
                "20% of the empty store's",
                f"{q['rate']}x (CPU {q['cpu']}x)",
                bool(q["rate"] and q["rate"] >= 0.8),
            )
        )
    return checks


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


def ratio(a: float | None, b: float | None, lower_is_better: bool = False) -> str:
    if not a or not b:
        return "-"
    return f"{(b / a if lower_is_better else a / b):.2f}x"


def best_peer(
    res: dict[str, dict[str, Any]], n: int | str, family: str = ""
) -> tuple[str, float] | None:
    """The peer with the highest fan-out figure at `n` connections in this run (of those whose
    name starts with `family`: `node_ws` covers the paused variant too), the raw reference and
    Clarion left out. Ratios are against it, so that no slower variant flatters Clarion."""
    rated = [
        (name, levels.get(str(n), {}).get("fanout", {}).get("rate") or 0)
        for name, levels in res.items()
        if name not in ("clarion", "raw") and name.startswith(family)
    ]
    rated = [r for r in rated if r[1]]
    return max(rated, key=lambda r: r[1]) if rated else None


FAMILIES = (("node_socketio", "Node Socket.IO", 1.5), ("node_ws", "Node ws", 1.0))


def fanout_checks(report: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """Issue #17's fan-out goals at the largest connection count, for each publishes-in-flight
    setting: >= 1.5x the best Node Socket.IO figure and >= 1.0x the best Node ws figure."""
    res = report["results"]
    big = str(max(report["config"]["conns"]))
    c = res.get("clarion", {}).get(big, {})
    by = c.get("fanout_by_concurrency") or {"": c.get("fanout", {})}
    checks = []
    for k, f in by.items():
        rate = f.get("rate")
        for family, label, goal in FAMILIES:
            best = best_peer(res, big, family)
            if not best:
                continue
            name, peer_rate = best
            got = rate / peer_rate if rate else 0.0
            flag = " (noisy)" if f.get("other_cpu", 0) > NOISY else ""
            mine_cpu = f.get("per_cpu_s")
            peer_cpu = res[name].get(big, {}).get("fanout", {}).get("per_cpu_s")
            if mine_cpu and peer_cpu:
                flag += f"; per server CPU second {mine_cpu / peer_cpu:.2f}x"
            checks.append(
                (
                    f"fan-out at {int(big):,} connections"
                    + (f", {k} publishes in flight" if k else "")
                    + f": >= {goal:.1f}x the best {label} ({LABELS.get(name, name)})",
                    f"{got:.2f}x ({fmt_rate(rate)} vs {fmt_rate(peer_rate)}){flag}",
                    got >= goal,
                )
            )
    return checks


def markdown(report: dict[str, Any]) -> str:
    res: dict[str, dict[str, Any]] = report["results"]
    conns = report["config"]["conns"]
    base = report["baseline"]
    ceil = report["ceilings"]
    lines = [
        f"# Clarion benchmark, {report['started']}",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} cores, "
        f"Linux {report['machine']['kernel']}, Python {report['machine']['python']}, "
        f"Node {report['machine']['node']}. Server pinned to core 0, load generator to core 1. "
        f"Payload ~{report['config']['size']} bytes. Mode: {report['config']['mode']}.",
        "",
    ]
    bname = LABELS.get(base, base)
    if base in res:
        lines += [
            f"\"{bname} advantage\" is {bname}'s figure over the server's for rates, and the "
            f"server's over {bname}'s for memory: above 1.00x, {bname} does better.",
            "",
        ]
    if any("fanout" in lv for r in res.values() for lv in r.values()):
        lines += [
            "## Broadcast fan-out (deliveries/s, median burst)",
            "",
            "Per server CPU s: deliveries per CPU second of the server's processes over the "
            "bursts, the figure to compare when other work on the machine took the server's core.",
            "",
        ]
        head = ["server"]
        for n in conns:
            head += [
                f"{n:,} conns",
                f"p50 / p99 / p99.9 ms at {n:,}",
                f"per server CPU s at {n:,}",
            ]
            if base in res:
                head.append(f"{bname} advantage at {n:,}")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for peer, levels in res.items():
            row = [LABELS.get(peer, peer)]
            for n in conns:
                f = levels.get(str(n), {}).get("fanout")
                if not f:
                    row += ["-", "-", "-"] + (["-"] if base in res else [])
                    continue
                flag = ""
                gc = ceil.get(str(n), {}).get("generator")
                if gc and f["rate"] and f["rate"] > GENERATOR_BOUND * gc and peer != "raw":
                    flag = " (generator-bound)"
                if not f["complete"]:
                    flag += " (incomplete)"
                if f.get("other_cpu", 0) > NOISY:
                    flag += f" (noisy: {f['other_cpu']} cores busy elsewhere)"
                if f.get("stalls"):
                    flag += " (TCP timeouts or drops)"
                lat = f["latency_ms"]
                row += [fmt_rate(f["rate"]) + flag, f"{lat['p50']} / {lat['p99']} / {lat['p999']}"]
                row.append(fmt_rate(f.get("per_cpu_s")))
                if base in res:
                    b = res[base].get(str(n), {}).get("fanout", {})
                    row.append(ratio(b.get("rate"), f["rate"]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if ceil:
            lines.append(
                "Ceilings: "
                + "; ".join(
                    f"{int(n):,} conns: generator {fmt_rate(c.get('generator'))}/s, "
                    f"loopback (one write per delivery) {fmt_rate(c.get('loopback'))}/s"
                    for n, c in ceil.items()
                )
                + "."
            )
            lines.append("")
    lines += (
        []
        if not res
        else [
            "## Idle memory per WebSocket connection",
            "",
            f"| server | KB per connection (at {conns[-1]:,}) | RSS idle / connected (MB) |"
            + (f" {bname} advantage |" if base in res else ""),
            "|---|---|---|" + ("---|" if base in res else ""),
        ]
    )
    for peer, levels in res.items():
        m = levels.get(str(conns[-1]), {}).get("memory")
        if not m or peer == "raw":
            continue
        row = [
            LABELS.get(peer, peer),
            f"{m['kb_per_conn']:.1f}",
            f"{m['rss_idle_mb']} / {m['rss_connected_mb']}",
        ]
        if base in res:
            b = res[base].get(str(conns[-1]), {}).get("memory", {})
            row.append(ratio(b.get("kb_per_conn"), m["kb_per_conn"], lower_is_better=True))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if any("steady" in lv for r in res.values() for lv in r.values()):
        rate = report["config"]["rate"]
        lines += [
            f"## Steady delivery at {rate:,}/s (latency ms)",
            "",
            "| server | conns | achieved/s | p50 | p99 | p99.9 | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for peer, levels in res.items():
            for n in conns:
                s = levels.get(str(n), {}).get("steady")
                if s:
                    lat = s["latency_ms"]
                    flag = f" (noisy: {s['other_cpu']})" if s.get("other_cpu", 0) > NOISY else ""
                    lines.append(
                        f"| {LABELS.get(peer, peer)} | {n:,} | {fmt_rate(s['rate'])}{flag} | "
                        f"{lat['p50']} | {lat['p99']} | {lat['p999']} | {lat['max']} |"
                    )
        lines.append("")
    lines += connect_markdown(report)
    lines += connect_history_markdown(report)
    if "clarion" in res:
        lines += extra_markdown(report)
        lines += ["## Targets", ""]
        big = str(max(conns))
        c = res["clarion"].get(big, {})
        rate = c.get("fanout", {}).get("rate")
        kb = c.get("memory", {}).get("kb_per_conn")
        checks = [
            (
                f"fan-out >= 120,000 deliveries/s to {int(big):,} connections",
                rate,
                bool(rate and rate >= 120_000),
            ),
            *fanout_checks(report),
            ("idle connection <= 16 KB (aim 8 KB)", kb, bool(kb is not None and kb <= 16)),
        ]
        for n in conns:
            st = res["clarion"].get(str(n), {}).get("steady")
            if st:
                p99 = st["latency_ms"]["p99"]
                checks.append(
                    (
                        f"steady {report['config']['rate']:,}/s at {n:,} connections: p99 <= 50 ms",
                        f"p99 {p99} ms at {fmt_rate(st['rate'])}/s",
                        bool(p99 is not None and p99 <= 50 and st["received"] == st["expected"]),
                    )
                )
        durable = report.get("clarion_extra", {}).get("durable_sqlite", {})
        for label, how in (("single", "1 per request"), ("many", "batch API, 100 per request")):
            d = durable.get(label)
            if d:
                checks.append(
                    (
                        f">= 5,000 durable personal notifications/s on SQLite ({how})",
                        f"{fmt_rate(d['notifications_per_s'])}/s",
                        d["notifications_per_s"] >= 5000,
                    )
                )
        checks += scale_checks(report) + connect_checks(report)
        lines += ["| target | measured | met |", "|---|---|---|"]
        for what, value, ok in checks:
            v = fmt_rate(value) if isinstance(value, (int, float)) and value > 100 else value
            lines.append(f"| {what} | {v} | {'yes' if ok else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def plots(json_path: Path, folder: Path, python: Path) -> list[str]:
    """PNG plots made by bench/plots.py with matplotlib, installed into bench/.work/venv (never a
    dependency of the project)."""
    probe = subprocess.run([str(python), "-c", "import matplotlib"], capture_output=True)
    if probe.returncode:
        with console.status("installing matplotlib into bench/.work/venv"):
            run_checked([str(python), "-m", "pip", "install", "-q", "matplotlib==3.9.2"], 600)
    folder.mkdir(parents=True, exist_ok=True)
    out = run_checked([str(python), str(BENCH / "plots.py"), str(json_path), str(folder)], 120)
    return out.split()


def extra_markdown(report: dict[str, Any]) -> list[str]:
    """Clarion against each peer, by publish concurrency, durable and transport sections."""
    res = report["results"]
    conns = report["config"]["conns"]
    lines: list[str] = []
    c = res["clarion"]
    others = [p for p in res if p not in ("clarion", "raw")]
    if others:
        lines += [
            "## Clarion against each peer (same run)",
            "",
            "Clarion's figure over the peer's for fan-out (above 1.00x Clarion is faster), the "
            "peer's over Clarion's for memory (above 1.00x Clarion uses less).",
            "",
        ]
        head = ["peer"] + [f"fan-out at {n:,}" for n in conns] + [f"memory at {conns[-1]:,}"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in others:
            row = [LABELS.get(p, p)]
            for n in conns:
                a = c.get(str(n), {}).get("fanout", {}).get("rate")
                b = res[p].get(str(n), {}).get("fanout", {}).get("rate")
                row.append(ratio(a, b))
            a = c.get(str(conns[-1]), {}).get("memory", {}).get("kb_per_conn")
            b = res[p].get(str(conns[-1]), {}).get("memory", {}).get("kb_per_conn")
            row.append(ratio(a, b, lower_is_better=True))
            lines.append("| " + " | ".join(row) + " |")
        row = ["**the best peer of the run**"]
        for n in conns:
            best = best_peer(res, n)
            a = c.get(str(n), {}).get("fanout", {}).get("rate")
            row.append(f"{ratio(a, best[1])} ({LABELS.get(best[0], best[0])})" if best else "-")
        lines.append("| " + " | ".join([*row, ""]) + " |")
        lines.append("")
    if any("fanout_by_concurrency" in lv for lv in c.values()):
        lines += [
            "## Clarion fan-out by publishes in flight",
            "",
            "Deliveries/s (p50 / p99 ms), and Clarion's figure over the best of each peer family "
            "in this run (Socket.IO / ws: the faster of the idiomatic and the paused variant).",
            "",
            "| publishes in flight | "
            + " | ".join(f"{n:,} conns | x best Socket.IO / ws at {n:,}" for n in conns)
            + " |",
            "|---|" + "---|---|" * len(conns),
        ]
        for k in report["config"]["publish_concurrency"]:
            row = [f"{k}" + (" (waits for each 201)" if k == 1 else "")]
            for n in conns:
                f = c.get(str(n), {}).get("fanout_by_concurrency", {}).get(str(k))
                if not f:
                    row += ["-", "-"]
                    continue
                flag = " (noisy)" if f.get("other_cpu", 0) > NOISY else ""
                flag += "" if f["complete"] else " (incomplete)"
                lat = f["latency_ms"]
                row.append(f"{fmt_rate(f['rate'])}{flag} ({lat['p50']} / {lat['p99']})")
                if f.get("per_cpu_s"):
                    row[-1] += f"; {fmt_rate(f['per_cpu_s'])} per server CPU s"
                bests = [best_peer(res, n, family) for family, _, _ in FAMILIES]
                row.append(" / ".join(ratio(f["rate"], b[1]) if b else "-" for b in bests))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    extra = report.get("clarion_extra", {})
    durs = [(k.split("_", 1)[1], v) for k, v in extra.items() if k.startswith("durable_")]
    if durs:
        lines += [
            "## Durable personal notifications (POST /v1/notifications with `users`)",
            "",
            f"{report['config']['durable_concurrency']} requests in flight, "
            f"{report['config']['durable_seconds']:.0f} s each, from bench/loadgen/http.mjs on "
            "core 1.",
            "",
            "| database | per request | notifications/s | recipients/s | "
            "p50 / p99 ms | server CPU | client CPU | non-2xx |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for db, d in durs:
            for label in ("single", "batch", "many"):
                r = d.get(label)
                if not r:
                    continue
                bad = sum(v for k, v in r["statuses"].items() if k not in ("200", "201"))
                flag = " (noisy)" if r.get("other_cpu", 0) > NOISY else ""
                shape = (
                    f"{r['many']} notifications (batch API)"
                    if r.get("many")
                    else f"1 notification, {r['batch']} user(s)"
                )
                lines.append(
                    f"| {db} | {shape} | {fmt_rate(r['notifications_per_s'])}{flag} | "
                    f"{fmt_rate(r['recipients_per_s'])} | {r['latency_ms']['p50']} / "
                    f"{r['latency_ms']['p99']} | {r['server_cpu']} | {r['client_cpu']} | {bad} |"
                )
        lines.append("")
    mems = [(k.split("_", 1)[1], v) for k, v in extra.items() if k.startswith("memory_")]
    if mems:
        ws = c.get(str(conns[-1]), {}).get("memory")
        lines += [
            "## Clarion idle memory per connection by transport",
            "",
            "| transport | connections | KB per connection | RSS idle / connected (MB) |",
            "|---|---|---|---|",
        ]
        if ws:
            lines.append(
                f"| WebSocket | {conns[-1]:,} | {ws['kb_per_conn']:.1f} | "
                f"{ws['rss_idle_mb']} / {ws['rss_connected_mb']} |"
            )
        for kind, m in mems:
            mm = m["memory"]
            lines.append(
                f"| {'SSE' if kind == 'sse' else 'long-polling'} | {m['connect']['ok']:,} | "
                f"{mm['kb_per_conn']:.1f} | {mm['rss_idle_mb']} / {mm['rss_connected_mb']} |"
            )
        lines.append("")
    return lines + scale_markdown(report)


def scale_markdown(report: dict[str, Any]) -> list[str]:
    """The capacity and latency sections of the report."""
    extra = report.get("clarion_extra", {})
    lines: list[str] = []
    cap = extra.get("capacity")
    if cap and "servers" in cap:
        con = cap["connect"]
        gen = con["generator"]
        lines += [
            "## Connections held at once (several Clarion processes)",
            "",
            f"{len(cap['servers'])} `clarion serve` processes, each on its own port and SQLite "
            f"file, unpinned; one generator per server (one process per {PER_WORKER:,} "
            f"connections) from {len(cap['source_addresses'])} loopback source addresses; "
            f"open-file limit {cap['fd_limit']:,} per process. WebSocket, one distinct user per "
            "connection.",
            "",
            "| server | asked | held | failed | server's own count | KB per connection | "
            "RSS idle / connected (MB) | open files |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, s in enumerate(cap["servers"]):
            lines.append(
                f"| {i + 1} | {s['asked']:,} | {s['ok']:,} | {s['failed']:,} | "
                f"{s['server_count']:,} | {s['kb_per_conn']:.1f} | "
                f"{s['rss_idle_mb']} / {s['rss_connected_mb']} | {s['open_files']:,} |"
            )
        b = cap["broadcast"]
        lines += [
            f"| **all** | {cap['target']:,} | **{con['ok']:,}** | {con['failed']:,} | "
            f"{sum(s['server_count'] or 0 for s in cap['servers']):,} | | "
            f"{cap['servers_rss_mb']:,} MB in all | |",
            "",
            f"Opened in {con['seconds']} s ({con['per_second']:,} handshakes/s); generator "
            f"{gen['cpu']} cores, event-loop delay p99 {gen['loop_delay_p99_ms']} ms"
            + (" (**generator saturated**)" if gen["saturated"] else " (not saturated)")
            + f"; generator RSS {cap['generator_rss_mb']:,} MB. After {cap.get('held', 0):,} "
            f"were held a while, one notification to `all` on every server reached "
            f"{b['received']:,} of {b['open']:,} open connections, the last "
            f"{b['ms_to_last']} ms after the publishes ({b['closed']} closed).",
            "",
        ]
    lats = [(k, v) for k, v in extra.items() if k.startswith("latency") and v.get("runs")]
    if lats:
        lat = lats[0][1]
        lines += [
            f"## Publish-to-socket latency, personal notifications, {lat['users']:,} users "
            "connected",
            "",
            "Each connection is a distinct user (WebSocket). `bench/loadgen/http.mjs personal` "
            'POSTs `{"users": [one random user]}` at a fixed rate (open loop, up to 64 in '
            "flight); latency = arrival on that user's socket - the instant the request was "
            "sent. Server on core 0; publisher and generator on core 1. Garbage collector: "
            "`tuned` is Clarion's setting (app.py `_tune_gc`), `default` Python's "
            "(`CLARION_GC_TUNING=0`).",
            "",
            "| GC | rate/s | published (201) / received | p50 ms | p99 ms | p99.9 ms | max ms | "
            "201 p50 / p99 ms | server CPU | publisher / generator CPU | flags |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs = [
            ("default" if v.get("env", {}).get("CLARION_GC_TUNING") == "0" else "tuned", r)
            for _, v in lats
            for r in v["runs"].values()
        ]
        for gc_label, r in runs:
            lm, pm = r["latency_ms"], r["publish_201_ms"]
            flags = []
            if r["publisher"]["saturated"]:
                flags.append("publisher saturated")
            if r["generator"]["saturated"]:
                flags.append("generator saturated")
            if r["received"] != r["published"]:
                flags.append("incomplete")
            if r.get("other_cpu", 0) > NOISY:
                flags.append(f"noisy: {r['other_cpu']} cores elsewhere")
            lines.append(
                f"| {gc_label} | {r['rate']:,} | {r['published']:,} / {r['received']:,} | "
                f"{lm['p50']} | "
                f"{lm['p99']} | {lm['p999']} | {lm['max']} | {pm['p50']} / {pm['p99']} | "
                f"{r['server_cpu']} | {r['publisher']['cpu']} / {r['generator']['cpu']} | "
                f"{', '.join(flags) or '-'} |"
            )
        lines.append("")
    return lines


def scale_checks(report: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """Rows of the targets table for the capacity scenario."""
    cap = report.get("clarion_extra", {}).get("capacity")
    if not cap or "servers" not in cap:
        return []
    b = cap["broadcast"]
    most = max(s["ok"] for s in cap["servers"])
    return [
        (
            f"{cap['target']:,} concurrent connections on this machine, every one live",
            f"{cap['connect']['ok']:,} held; {b['received']:,} reached by a broadcast; "
            f"one process held {most:,}",
            cap["connect"]["ok"] >= cap["target"] and b["received"] >= cap["target"],
        )
    ]
