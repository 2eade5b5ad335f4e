"""Work per delivery across worker processes: server CPU seconds per million deliveries and
deliveries per server CPU second, so that 1 against 2 workers compares the work done and does
not depend on the load generator having cores of its own (on a 2-core machine it has none)."""

from __future__ import annotations

import statistics
from typing import Any


def cpu_use(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """Server CPU seconds and deliveries over the measured bursts of one run (the warm-up left
    out): CPU seconds per million deliveries and deliveries per CPU second."""
    cpu = sum(b["server_cpu_s"] for b in bursts)
    got = sum(b["received"] for b in bursts)
    return {
        "server_cpu_s": round(cpu, 2),
        "deliveries": got,
        "cpu_s_per_million": round(cpu / got * 1e6, 2) if got else None,
        "per_cpu_s": round(got / cpu) if cpu else None,
    }


def efficiency(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Deliveries per server CPU second, median of the runs, for 1 and 2 workers; efficiency is
    the 2-worker figure over the 1-worker one (1.0: a second worker costs nothing per delivery,
    0.9: 2 workers deliver 1.8x on twice the CPU)."""
    per = {
        w: statistics.median(r["per_cpu_s"] for r in rs if r.get("per_cpu_s"))
        for w, rs in runs.items()
        if any(r.get("per_cpu_s") for r in rs)
    }
    if set(per) != {"1", "2"}:
        return {}
    return {
        "per_cpu_s": per,
        "cpu_s_per_million": {w: round(1e6 / v, 2) for w, v in per.items()},
        "efficiency": round(per["2"] / per["1"], 2),
    }
