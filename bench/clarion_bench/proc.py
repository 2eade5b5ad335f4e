"""Process control and setup: paths, pinning, starting and ending processes, the Node and
Python dependencies the bench installs under bench/.work, and what machine this is."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

BENCH = Path(__file__).resolve().parents[1]  # bench/
WORK = BENCH / ".work"
NODE_DIR = WORK / "node"
VENV = WORK / "venv"
RESULTS = BENCH / "results"
PER_WORKER = 5000  # connections per generator process


console = Console(stderr=True)


class BenchError(RuntimeError):
    pass


def now_ms() -> float:
    return time.time() * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    """taskset prefix for a child process, when there are two cores to split."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


def stat_cpu_seconds(stat: str, ticks_per_s: float) -> float:
    """User + system CPU seconds from the text of /proc/<pid>/stat (fields 14 and 15, counted
    after the command name, which may hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def proc_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by these processes, read from /proc/<pid>/stat; a process that
    has ended counts 0 (its time is gone with it)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), ticks)
    return total


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """Ends a process we started, and the processes it started, by pid."""
    if proc is None or proc.poll() is not None:
        return
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()


# ---------------------------------------------------------------------------------------------
# Setup: the bench installs its own Node and Python dependencies under bench/.work.


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def ensure_node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise BenchError("the benchmark needs node (>= 18) and npm on PATH")
    manifest, lock = BENCH / "loadgen" / "package.json", BENCH / "loadgen" / "package-lock.json"
    stamp = NODE_DIR / ".stamp"
    want = digest(manifest, lock)
    if not (stamp.exists() and stamp.read_text() == want):
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest, NODE_DIR / "package.json")
        shutil.copy(lock, NODE_DIR / "package-lock.json")
        with console.status("installing Node dependencies (npm ci) into bench/.work/node"):
            run_checked([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"], 600)
        stamp.write_text(want)
    return node


def ensure_venv() -> Path:
    reqs = BENCH / "peers" / "requirements.txt"
    python = VENV / "bin" / "python"
    stamp = VENV / ".stamp"
    want = digest(reqs)
    if not (stamp.exists() and stamp.read_text() == want and python.exists()):
        with console.status("installing the Python peers into bench/.work/venv"):
            run_checked([sys.executable, "-m", "venv", "--clear", str(VENV)], 300)
            run_checked([str(python), "-m", "pip", "install", "-q", "-r", str(reqs)], 600)
        stamp.write_text(want)
    return python


def run_checked(argv: list[str], timeout: float) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise BenchError(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def psql(base: str, sql: str) -> None:
    run_checked(["psql", f"{base}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], 60)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(
        [shutil.which("node") or "node", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
    }


def find_clarion(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    here = Path(sys.executable).parent / "clarion"
    if here.exists():
        return here
    found = shutil.which("clarion")
    return Path(found) if found else None
