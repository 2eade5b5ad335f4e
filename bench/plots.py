"""Plots of one benchmark result: python bench/plots.py RESULT.json FOLDER

Run by bench/run.py with bench/.work/venv's Python, where it installs matplotlib (never a
dependency of the project). Writes bench-throughput.png, bench-latency-cdf.png and
bench-memory.png (and bench-personal-latency.png) into FOLDER and prints their paths; for a
result of bench/history.py, bench-history.png; for one of bench/soak.py, bench-soak.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "raw": "raw frames\n(loopback ceiling)",
    "node_ws": "Node ws",
    "node_socketio": "Node\nSocket.IO",
    "node_ws_paused": "Node ws\n(paused)",
    "node_socketio_paused": "Node Socket.IO\n(paused)",
    "py_websockets": "Python\nwebsockets",
    "py_socketio": "python-\nsocketio",
    "clarion": "Clarion",
}
COLORS = {"clarion": "#d62728", "raw": "#7f7f7f"}
LINE_COLORS = {
    "raw": "#7f7f7f",
    "node_ws": "#1f77b4",
    "node_socketio": "#ff7f0e",
    "node_ws_paused": "#aec7e8",
    "node_socketio_paused": "#ffbb78",
    "py_websockets": "#2ca02c",
    "py_socketio": "#9467bd",
    "clarion": "#d62728",
}
BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}


def legend_label(peer: str) -> str:
    return LABELS.get(peer, peer).replace("-\n", "-").replace("\n", " ")


def main() -> None:
    report = json.loads(Path(sys.argv[1]).read_text())
    folder = Path(sys.argv[2])
    if report.get("kind") == "history":  # bench/history.py
        print(history(report, folder))
        return
    if report.get("kind") == "soak":  # bench/soak.py
        print(soak(report, folder))
        return
    res = report["results"]
    conns = report["config"]["conns"]
    made = []

    # Throughput bars: one group per connection count.
    fig, axes = plt.subplots(1, len(conns), figsize=(6 * len(conns), 4.8), squeeze=False)
    for ax, n in zip(axes[0], conns, strict=True):
        names, rates = [], []
        for peer, levels in res.items():
            f = levels.get(str(n), {}).get("fanout")
            if f and f.get("rate"):
                names.append(peer)
                rates.append(f["rate"] / 1000)
        bars = ax.bar(
            [LABELS.get(p, p) for p in names],
            rates,
            color=[COLORS.get(p, "#1f77b4") for p in names],
        )
        ax.bar_label(bars, fmt="%.0fk", fontsize=9)
        if n == max(conns):
            ax.axhline(120, color="#d62728", ls="--", lw=1)
            ax.text(-0.45, 123, "target 120k", color="#d62728", ha="left", fontsize=9, bbox=BOX)
        ax.set_title(f"Broadcast fan-out, {n:,} connections")
        ax.set_ylabel("thousand deliveries/s (server on 1 core)")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(0, max([*rates, 130]) * 1.15)
    fig.tight_layout()
    path = folder / "bench-throughput.png"
    fig.savefig(path, dpi=110)
    made.append(str(path))
    plt.close(fig)

    # Latency CDF: fan-out bursts and steady load at the largest connection count.
    n = max(conns)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, title in (
        (axes[0], "fanout", f"Fan-out burst latency, {n:,} connections"),
        (axes[1], "steady", f"Steady {report['config']['rate']:,} deliveries/s, {n:,} connections"),
    ):
        for peer, levels in res.items():
            s = levels.get(str(n), {}).get(key)
            if not s or not s.get("cdf"):
                continue
            pts = [(v, q) for q, v in s["cdf"] if v is not None]
            ax.plot(
                [max(v, 0.1) for v, _ in pts],
                [q * 100 for _, q in pts],
                label=legend_label(peer),
                color=LINE_COLORS.get(peer),
                lw=2.5 if peer == "clarion" else 1.4,
                marker=".",
            )
        if key == "steady":
            ax.axvline(50, color="#d62728", ls="--", lw=1)
            ax.text(52, 3, "p99 target 50 ms", color="#d62728", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_ylabel("percentile")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = folder / "bench-latency-cdf.png"
    fig.savefig(path, dpi=110)
    made.append(str(path))
    plt.close(fig)

    # Memory per idle connection.
    names, kbs = [], []
    for peer, levels in res.items():
        m = levels.get(str(n), {}).get("memory")
        if m and peer != "raw":
            names.append(LABELS.get(peer, peer) + ("\n(WebSocket)" if peer == "clarion" else ""))
            kbs.append(m["kb_per_conn"])
    for kind, label in (("sse", "Clarion\n(SSE)"), ("poll", "Clarion\n(long-poll)")):
        m = report.get("clarion_extra", {}).get(f"memory_{kind}")
        if m:
            names.append(label)
            kbs.append(m["memory"]["kb_per_conn"])
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars = ax.bar(names, kbs, color=["#d62728" if "Clarion" in x else "#1f77b4" for x in names])
    ax.bar_label(bars, fmt="%.1f", fontsize=9)
    ax.axhline(16, color="#d62728", ls="--", lw=1)
    ax.axhline(8, color="#2ca02c", ls=":", lw=1)
    ax.text(-0.45, 16.6, "limit 16 KB", color="#d62728", ha="left", fontsize=9, bbox=BOX)
    ax.text(-0.45, 8.6, "aim 8 KB", color="#2ca02c", ha="left", fontsize=9, bbox=BOX)
    ax.set_ylabel("KB RSS per idle connection")
    ax.set_title(f"Idle memory per connection, {n:,} connections")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = folder / "bench-memory.png"
    fig.savefig(path, dpi=110)
    made.append(str(path))
    plt.close(fig)
    made += personal_latency(report, folder)
    print(" ".join(made))


def personal_latency(report: dict, folder: Path) -> list[str]:
    """CDF of publish-to-socket latency of personal notifications, one line per rate and
    garbage-collector setting (bench-personal-latency.png)."""
    extra = report.get("clarion_extra", {})
    runs = [
        ("default GC" if v.get("env", {}).get("CLARION_GC_TUNING") == "0" else "Clarion", r, v)
        for k, v in extra.items()
        if k.startswith("latency") and v.get("runs")
        for r in v["runs"].values()
    ]
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, r, _v in runs:
        pts = [(q, ms) for q, ms in r["cdf"] if ms is not None]
        ax.plot(
            [ms for _, ms in pts],
            [q * 100 for q, _ in pts],
            marker=".",
            linestyle="--" if label != "Clarion" else "-",
            label=f"{label}, {r['rate']:,}/s",
        )
    ax.set_xscale("log")
    ax.set_xlabel("ms from POST sent to arrival on the user's socket (log)")
    ax.set_ylabel("percentile")
    users = runs[0][2]["users"]
    ax.set_title(f"Personal notifications, {users:,} users connected")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = folder / "bench-personal-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


HISTORY_LINES = {
    "sqlite": ("SQLite", "#1f77b4", "-"),
    "postgres": ("PostgreSQL, no statistics", "#d62728", "--"),
    "postgres_analyzed": ("PostgreSQL after ANALYZE", "#2ca02c", "-"),
    "sqlite_swept": ("SQLite, after retention", "#1f77b4", ":"),
    "postgres_swept": ("PostgreSQL, after retention", "#d62728", ":"),
    "postgres_analyzed_swept": ("PostgreSQL, retention + ANALYZE", "#2ca02c", ":"),
}


def history(report: dict, folder: Path) -> str:
    """Each operation's time against the notifications stored, log-log, one line per backend,
    with issue #10's bound dashed; a call that timed out is a hollow triangle at the timeout
    (bench-history.png)."""
    ops = list(report["targets_ms"])
    cols = 5
    rows = -(-len(ops) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops, strict=False):
        for label, sizes in report["results"].items():
            name, color, style = HISTORY_LINES.get(label, (label, None, "-"))
            pts, late = [], []
            for n, res in sorted(sizes.items(), key=lambda kv: int(kv[0])):
                r = res["ops"].get(op, {})
                if "median_ms" in r:
                    pts.append((int(n), r["median_ms"]))
                elif "timeout_s" in r:
                    late.append((int(n), r["timeout_s"] * 1000))
            if pts:
                ax.plot(*zip(*pts, strict=True), style, marker="o", ms=4, color=color, label=name)
            if late:
                ax.plot(*zip(*late, strict=True), "^", mfc="none", color=color)
        ax.axhline(report["targets_ms"][op], color="#7f7f7f", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(report.get("operations", {}).get(op, op), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(ops) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("notifications stored", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms (median)", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.suptitle("Per-user cost against history (dotted: issue #10's bound)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = folder / "bench-history.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def soak(report: dict, folder: Path) -> str:
    """Six panels over the soak's time: server RSS, open fds, reconnect handshake p50/p99,
    publish-to-socket lag p50/p99, deliveries received against those expected from the 201s,
    and the difference (in flight; it must end at 0) (bench-soak.png). Flat lines are the point."""
    s = [
        {**p, "in_flight": p["expected"] - p["received"], "received_m": p["received"] / 1e6}
        | {"expected_m": p["expected"] / 1e6}
        for p in report["samples"]
    ]
    c = report["config"]
    minutes = [p["t"] / 60 for p in s]
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    panels = (
        (axes[0, 0], [("rss_mb", "RSS")], "server RSS, MB"),
        (axes[0, 1], [("fds", "open fds")], "server open file descriptors"),
        (
            axes[1, 0],
            [("handshake_p50_ms", "p50"), ("handshake_p99_ms", "p99")],
            "reconnect handshake (to `unread`), ms",
        ),
        (axes[1, 1], [("lag_p50_ms", "p50"), ("lag_p99_ms", "p99")], "publish-to-socket lag, ms"),
        (
            axes[2, 0],
            [("expected_m", "expected"), ("received_m", "received")],
            "deliveries, millions (expected: from the 201s)",
        ),
        (axes[2, 1], [("in_flight", "expected - received")], "deliveries in flight"),
    )
    for ax, keys, title in panels:
        for key, label in keys:
            pts = [(m, p[key]) for m, p in zip(minutes, s, strict=True) if p[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=label, color=None)
        ax.axvline(c["minutes"], color="#7f7f7f", ls=":", lw=1)  # publishing ends, drain
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in axes[2]:
        ax.set_xlabel("minutes")
    f = report["final"]
    acked = f["acknowledged"] / (c["minutes"] * 60)
    fig.suptitle(
        f"Soak: {c['conns']:,} connections, {c['rate']:g} publishes/s asked ({acked:.0f} "
        f"acknowledged), {c['churn']:.0%} reconnecting every {c['churn_every']:g} s, "
        f"{c['minutes']:g} min; lost {f['lost']}, duplicated {f['duplicated']}",
        fontsize=11,
    )
    fig.tight_layout()
    path = folder / "bench-soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    main()
