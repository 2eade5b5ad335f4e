"""Stores of history, loaded once and kept: bench/history.py fills them (and measures one
user's calls on them); the connect scenario (`run.py --history N`) storms a copy of the same
SQLite file, so both benches see the very same rows."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from clarion_bench.proc import BENCH, WORK, BenchError

# Bump when the data bench/history.py loads changes shape: cached stores are then rebuilt.
HISTORY_DATA_VERSION = 1
HISTORY_CACHE = WORK / "history"


def code_key(binary: Path) -> str:
    """A hash of the Clarion code the server runs (its package's Python files) and of the data
    version, so a store cached by one version is never measured by another."""
    python = binary.parent / "python"
    where = subprocess.run(
        [
            str(python if python.exists() else sys.executable),
            "-c",
            "import clarion; print(clarion.__path__[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    h = hashlib.sha256(f"data-v{HISTORY_DATA_VERSION}".encode())
    for path in sorted(Path(where).rglob("*.py")):
        h.update(str(path.relative_to(where)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def history_sqlite(n: int, key: str) -> Path:
    """Where bench/history.py keeps its loaded SQLite store of `n` notifications."""
    return HISTORY_CACHE / f"sqlite-{n}-{key}.db"


def ensure_history_sqlite(n: int, binary: Path, timeout: float = 4 * 3600) -> Path:
    """The cached SQLite store of `n` notifications for this Clarion code: loaded now by
    `bench/history.py --load-only` when there is none (18 minutes for 1,000,000 here)."""
    path = history_sqlite(n, code_key(binary))
    if path.exists():
        return path
    argv = [sys.executable, str(BENCH / "history.py"), "--sizes", str(n), "--backends", "sqlite"]
    argv += ["--load-only", "--clarion", str(binary)]
    done = subprocess.run(argv, timeout=timeout, check=False)
    if done.returncode != 0 or not path.exists():
        raise BenchError(f"bench/history.py built no store of {n:,} (exit {done.returncode})")
    return path
