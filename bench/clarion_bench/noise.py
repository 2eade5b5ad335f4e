"""How busy the machine is besides us: CPU used by other processes and loopback trouble
counters, so that a shared machine's other work is seen and flagged, not measured."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from clarion_bench.loadgen import LoadGen
from clarion_bench.targets import Target

NOISY = 0.15  # cores used by other processes during a measurement that make it suspect


def net_counters() -> dict[str, int]:
    """Loopback trouble signs (Linux): packets dropped by a full per-CPU backlog, and TCP
    retransmissions and timeouts, which stall a burst for 200 ms or more."""
    out = {"softnet_drops": 0, "retrans": 0, "timeouts": 0}
    try:
        for line in Path("/proc/net/softnet_stat").read_text().splitlines():
            out["softnet_drops"] += int(line.split()[1], 16)
        snmp = Path("/proc/net/snmp").read_text().splitlines()
        tcp = [line.split()[1:] for line in snmp if line.startswith("Tcp:")]
        out["retrans"] = int(dict(zip(tcp[0], tcp[1], strict=True))["RetransSegs"])
        ext = Path("/proc/net/netstat").read_text().splitlines()
        tcpext = [line.split()[1:] for line in ext if line.startswith("TcpExt:")]
        out["timeouts"] = int(dict(zip(tcpext[0], tcpext[1], strict=True))["TCPTimeouts"])
    except (OSError, KeyError, IndexError, ValueError):
        pass
    return out


class Sample:
    """What the machine did between two instants: CPU spent by everyone (in cores), by our own
    processes, and the loopback trouble counters. Other sessions' work on a shared machine
    shows up as `other_cpu`, and makes a result suspect."""

    def __init__(self, target: Target, lg: LoadGen) -> None:
        self.target, self.lg = target, lg
        self.t = time.monotonic()
        self.busy = self._busy()
        self.ours = self._ours()
        self.irq, self.steal = self._kernel()
        self.net = net_counters()

    @staticmethod
    def _busy() -> float:
        # Interrupt time is left out: with IRQ time accounting, the loopback's softirq work is
        # counted there and not in any process, though it is ours.
        c = psutil.cpu_times()
        return c.user + c.nice + c.system

    @staticmethod
    def _kernel() -> tuple[float, float]:
        c = psutil.cpu_times()
        return c.irq + c.softirq, getattr(c, "steal", 0.0)

    def _ours(self) -> float:
        total = self.target.cpu_seconds()
        procs = [psutil.Process(), psutil.Process(self.lg.proc.pid)]
        with contextlib.suppress(psutil.Error):
            procs += procs[1].children(recursive=True)
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def since(self, before: Sample) -> dict[str, float]:
        wall = max(1e-3, self.t - before.t)
        net = {k: self.net[k] - before.net[k] for k in self.net}
        other = (self.busy - before.busy) - (self.ours - before.ours)
        return {
            "other_cpu": round(max(0.0, other) / wall, 2),
            "irq_cpu": round((self.irq - before.irq) / wall, 2),
            "steal_cpu": round((self.steal - before.steal) / wall, 2),
            **net,
        }


def wait_quiet(seconds: float, note: Callable[[str], None]) -> float:
    """Waits (at most `seconds`) until other processes use less than NOISY of a core, so that a
    shared machine's other work does not land in a measurement. Returns the load last seen."""
    me = psutil.Process()
    deadline = time.monotonic() + seconds
    while True:
        c0, m0, t0 = Sample._busy(), sum(me.cpu_times()[:2]), time.monotonic()
        time.sleep(0.5)
        other = (Sample._busy() - c0 - (sum(me.cpu_times()[:2]) - m0)) / (time.monotonic() - t0)
        if other < NOISY or time.monotonic() > deadline:
            return round(other, 2)
        note(f"waiting for the machine to be quiet ({other:.2f} cores busy elsewhere)")
