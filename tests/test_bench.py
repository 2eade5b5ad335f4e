"""The benchmark package's decisions, on fixed inputs: which peer figure a ratio is against, the
fan-out goals of issue #17, CPU from /proc, worker efficiency and the scenario sets. The bench
itself is not part of the test suite (it measures; these check what it concludes)."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from clarion_bench.driver import ALL_SCENARIOS, FULL_SCENARIOS, scenarios
from clarion_bench.efficiency import cpu_use, efficiency
from clarion_bench.proc import proc_cpu_seconds, stat_cpu_seconds
from clarion_bench.report import (
    best_peer,
    connect_checks,
    connect_history_markdown,
    fanout_checks,
    history_ratios,
    markdown,
)
from clarion_bench.scenarios.fanout import per_cpu_second
from clarion_bench.targets import ALL_PEERS, PAUSED, PEERS


def level(rate: float | None) -> dict[str, Any]:
    lat = {"p50": 1, "p99": 2, "p999": 3}
    fanout = {"rate": rate, "other_cpu": 0.0, "complete": True, "latency_ms": lat}
    return {"10000": {"fanout": fanout}}


RESULTS = {
    "raw": level(400_000),
    "node_ws": level(90_000),
    "node_ws_paused": level(80_000),
    "node_socketio": level(60_000),
    "node_socketio_paused": level(70_000),
    "py_websockets": level(None),
    "clarion": level(120_000),
}


def test_the_best_peer_is_the_fastest_variant_of_the_run_never_clarion_or_raw() -> None:
    assert best_peer(RESULTS, 10000) == ("node_ws", 90_000)
    assert best_peer(RESULTS, "10000", "node_socketio") == ("node_socketio_paused", 70_000)
    assert best_peer(RESULTS, 10000, "node_ws") == ("node_ws", 90_000)
    assert best_peer(RESULTS, 1000) is None
    assert best_peer({"clarion": level(1), "raw": level(2)}, 10000) is None


def test_fanout_goals_are_checked_at_each_publish_concurrency_against_the_best_peer() -> None:
    clarion = {
        "4": {"rate": 100_000, "other_cpu": 0.0},
        "16": {"rate": 140_000, "other_cpu": 0.5},
    }
    results = {**copy.deepcopy(RESULTS), "clarion": {"10000": {"fanout_by_concurrency": clarion}}}
    report = {"results": results, "config": {"conns": [1000, 10000]}}
    checks = {what: (value, ok) for what, value, ok in fanout_checks(report)}
    sio4 = "fan-out at 10,000 connections, 4 publishes in flight: >= 1.5x the best Node Socket.IO"
    ws4 = "fan-out at 10,000 connections, 4 publishes in flight: >= 1.0x the best Node ws"
    sio16 = sio4.replace(" 4 ", " 16 ")
    by_prefix = {what.split(" (")[0]: v for what, v in checks.items()}
    assert by_prefix[sio4] == ("1.43x (100,000 vs 70,000)", False)  # the paused one was faster
    assert by_prefix[ws4] == ("1.11x (100,000 vs 90,000)", True)
    assert by_prefix[sio16] == ("2.00x (140,000 vs 70,000) (noisy)", True)
    assert len(checks) == 4
    results["node_ws"]["10000"]["fanout"]["per_cpu_s"] = 200_000
    clarion["4"]["per_cpu_s"] = 250_000
    value = next(v for what, v, _ in fanout_checks(report) if what.startswith(ws4))
    assert value == "1.11x (100,000 vs 90,000); per server CPU second 1.25x"


def test_deliveries_per_server_cpu_second_sum_over_the_bursts() -> None:
    bursts = [{"received": 100_000, "server_cpu_s": 0.5}, {"received": 50_000, "server_cpu_s": 1}]
    assert per_cpu_second(bursts) == 100_000
    assert per_cpu_second([{"received": 5, "server_cpu_s": 0.0}]) is None
    assert per_cpu_second([{"received": 5}]) is None  # a result from before the field


def test_the_report_names_the_best_peer_and_renders_without_the_extra_scenarios() -> None:
    report = {
        "started": "now",
        "machine": {"cpu": "x", "cpus": 2, "kernel": "k", "python": "3", "node": "n"},
        "config": {"conns": [10000], "size": 100, "mode": "full", "rate": 20000},
        "baseline": "clarion",
        "ceilings": {},
        "results": RESULTS,
    }
    text = markdown(report)
    assert "| **the best peer of the run** | 1.33x (Node ws) |" in text
    assert "Node Socket.IO, yielding between emits" in text


def test_cpu_seconds_come_from_proc_stat_fields_14_and_15() -> None:
    stat = "42 (a ) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 7 7 20 0"
    assert stat_cpu_seconds(stat, 100) == 3.0
    assert proc_cpu_seconds([os.getpid()]) > 0
    assert proc_cpu_seconds([2**22 + 12345]) == 0  # gone: counts nothing, raises nothing


def test_worker_efficiency_is_deliveries_per_cpu_second_two_workers_over_one() -> None:
    bursts = [
        {"server_cpu_s": 1.5, "received": 150_000},
        {"server_cpu_s": 0.5, "received": 50_000},
    ]
    assert cpu_use(bursts) == {
        "server_cpu_s": 2.0,
        "deliveries": 200_000,
        "cpu_s_per_million": 10.0,
        "per_cpu_s": 100_000,
    }
    assert cpu_use([])["per_cpu_s"] is None
    runs = {
        "1": [{"per_cpu_s": 100_000}, {"per_cpu_s": 110_000}],
        "2": [{"per_cpu_s": 90_000}, {"per_cpu_s": 99_000}],
    }
    out = efficiency(runs)
    assert out["efficiency"] == 0.9
    assert out["cpu_s_per_million"] == {"1": 9.52, "2": 10.58}
    assert efficiency({"1": runs["1"], "2": [{"per_cpu_s": None}]}) == {}


def test_scenario_sets_keep_make_bench_short_and_all_complete() -> None:
    full = scenarios(None, quick=False)
    assert full == set(FULL_SCENARIOS.split(","))
    assert not full & {"connect", "capacity"}  # in make bench-full only
    assert scenarios("all", quick=False) == full | {"connect", "capacity"}
    assert scenarios("all", quick=True) == set(ALL_SCENARIOS.split(","))
    assert scenarios("fanout", quick=False) == {"fanout"}
    assert "connect" in scenarios(None, quick=True)


@pytest.mark.parametrize("name", PAUSED)
def test_paused_peers_are_known_but_not_run_by_default(name: str) -> None:
    assert name in ALL_PEERS
    assert name not in PEERS


def storm(ok: int, seconds: float, cpu: float) -> dict[str, Any]:
    gen = {"saturated": False}
    return {
        "ok": ok,
        "failed": 0,
        "seconds": seconds,
        "per_second": round(ok / seconds),
        "p50_ms": 1,
        "p99_ms": 2,
        "server_cpu_ms_per_handshake": cpu,
        "generator": gen,
    }


def test_connect_with_history_compares_pooled_rates_and_mean_cpu_of_the_pairs() -> None:
    rounds = [
        {"empty": storm(5000, 10.0, 0.6), "history": storm(5000, 12.5, 0.7)},
        {"empty": storm(5000, 10.0, 0.6), "history": storm(5000, 12.5, 0.8)},
        {"empty": storm(5000, 10.0, 0.6)},  # its history storm failed: left out
    ]
    assert history_ratios(rounds) == {"rate": 0.8, "cpu": 1.25}
    assert history_ratios([]) == {"rate": None, "cpu": None}
    report = {"connect_history": {"stored": 1_000_000, "store": "s.db", "levels": {"5000": rounds}}}
    text = "\n".join(connect_history_markdown(report))
    assert "## Connect storms against 1,000,000 notifications stored" in text
    assert "| 5,000 | 0.8 | 1.25 |" in text
    (check,) = connect_checks(report)
    assert check[2]  # 0.8: within 20%
    rounds[0]["history"] = storm(5000, 13.0, 0.7)
    assert not connect_checks(report)[0][2]


def test_history_cpu_per_call_counts_new_processes_from_zero() -> None:
    from history import cpu_ms, oncpu_ns

    assert cpu_ms({1: 5_000_000, 2: 1_000_000}, {1: 7_000_000, 2: 1_000_000, 3: 500_000}) == 2.5
    mine = oncpu_ns([os.getpid(), 2**22 + 12345])  # this process's threads; a gone one: none
    assert list(mine) == [os.getpid()] and mine[os.getpid()] > 0
