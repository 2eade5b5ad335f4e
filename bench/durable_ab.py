"""One publish per request, two builds side by side: server CPU per notification, alternated.

`bench/run.py --scenarios durable` starts a fresh server per run, so on a shared machine two
builds measured one after the other meet different loads. This starts one server per build
(each `clarion serve` on a fresh SQLite file, pinned to core 0, with run.py's limits), then runs
the same client (`bench/loadgen/http.mjs post`, one user a request, pinned to core 1) against
each in turn, short runs alternated, and prints per run the 201s a second, the server's CPU per
notification (from `/proc/<pid>/stat`), the latency and the load. A build is a name and the
`src` directory put first on `PYTHONPATH` (empty: this checkout's).

    python bench/durable_ab.py --build main=<checkout of main>/src --build branch= \\
        --concurrency 16,4,1 --rounds 2 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from clarion_bench.proc import free_port, pin

BENCH = Path(__file__).resolve().parent
CLARION = Path(sys.executable).with_name("clarion")
TICK = os.sysconf("SC_CLK_TCK")


class Server:
    """`clarion serve` of one build, with a publish key."""

    def __init__(self, name: str, src: str, tmp: Path) -> None:
        self.name, self.port = name, free_port()
        db = tmp / f"{name}.db"
        self.env = {
            **os.environ,
            "PYTHONPATH": src,
            "CLARION_DATABASE_URL": f"sqlite:///{db}",
            "CLARION_JWT_SECRET": "b" * 40,
            "CLARION_LOG_LEVEL": "warning",
            "CLARION_RATE_LIMIT_IP": "10000000/second",
            "CLARION_RATE_LIMIT_USER": "10000000/second",
            "CLARION_RATE_LIMIT_PUBLISH": "10000000/second",
        }
        argv = [*pin(0), str(CLARION), "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL)
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        out = subprocess.run(
            [str(CLARION), "keys", "create", "--scope", "publish", "--name", "ab"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r"clk_\S+", out)
        assert found, out
        self.key = found.group(0)

    def cpu(self) -> float:
        """User + system seconds of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def run(self, concurrency: int, seconds: float) -> dict[str, float]:
        node = shutil.which("node") or "node"
        argv = [*pin(1), node, str(BENCH / "loadgen" / "http.mjs"), "post"]
        argv += ["--url", f"http://127.0.0.1:{self.port}", "--key", self.key]
        argv += ["--concurrency", str(concurrency), "--seconds", str(seconds), "--batch", "1"]
        argv += ["--many", "0"]
        load = os.getloadavg()[0]
        cpu0 = self.cpu()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        cpu = self.cpu() - cpu0
        res = json.loads(out.strip().splitlines()[-1])
        created = res["statuses"].get("201", 0)
        return {
            "per_s": res["perSecond"],
            "cpu_ms": 1000 * cpu / max(1, created),
            "core": cpu / res["seconds"],
            "p50_ms": res["latencyMs"]["p50"],
            "not_201": sum(res["statuses"].values()) - created,
            "load": load,
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True, help="name=src (src may be '')")
    ap.add_argument("--concurrency", default="16,4,1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        servers = [Server(*b.split("=", 1), Path(tmp)) for b in args.build]
        try:
            for s in servers:  # warm: the key verified, caches filled
                s.run(16, 2)
            for c in (int(c) for c in args.concurrency.split(",")):
                for r in range(1, args.rounds + 1):
                    for s in servers:
                        m = s.run(c, args.seconds)
                        print(
                            f"{c:>3} in flight, round {r}, {s.name:>8}: {m['per_s']:7.0f}/s "
                            f"{m['cpu_ms']:.3f} ms CPU/notification, core {m['core']:.2f}, "
                            f"p50 {m['p50_ms']:.1f} ms, not 201: {m['not_201']:.0f}, "
                            f"load {m['load']:.1f}",
                            flush=True,
                        )
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()
