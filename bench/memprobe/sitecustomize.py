"""A probe of where the server's memory is, not part of any benchmark: put this folder first on
PYTHONPATH and set MEMPROBE=<dir>; then `kill -USR1 <server pid>` writes <dir>/probe-<n>.txt
(smaps_rollup; SQLite's memory in all and, per open connection, its page cache, schema and
prepared statements with each statement's memory and SQL; pymalloc blocks; gc counts by type,
frozen ones aside; threads) and <dir>/malloc-<n>.xml (glibc's malloc_info: heap in use and
free); `kill -USR2` runs malloc_trim(0) and `kill -WINCH` a complete collection, frozen objects
included, listing by type what it found unreachable (<dir>/garbage-<n>.txt). Found the
statements and the cycles that grew the soak's memory (docs/benchmarks.md, Soak):
    PYTHONPATH=bench/memprobe MEMPROBE=/tmp/probe .venv/bin/python bench/soak.py --conns 1000 \\
        --minutes 3 --slowloris 0 --idle 0 --rate 0.5 --churn 0.2 --churn-every 10
Reads the `sqlite3*` out of CPython 3.11's `pysqlite_Connection` (right after the object
header) and calls SQLite from the main thread: for diagnosis only, never in production.
"""

import ctypes
import gc
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

if os.environ.get("MEMPROBE"):
    _OUT = Path(os.environ["MEMPROBE"])
    _libc = ctypes.CDLL("libc.so.6")
    _lite = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 is linked to: the same state
    _lite.sqlite3_memory_used.restype = ctypes.c_int64
    _lite.sqlite3_db_status.argtypes = (
        [ctypes.c_void_p, ctypes.c_int] + [ctypes.POINTER(ctypes.c_int)] * 2 + [ctypes.c_int]
    )
    _lite.sqlite3_next_stmt.restype = ctypes.c_void_p
    _lite.sqlite3_next_stmt.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    _lite.sqlite3_sql.restype = ctypes.c_char_p
    _lite.sqlite3_sql.argtypes = [ctypes.c_void_p]
    _lite.sqlite3_stmt_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    _libc.fopen.restype = ctypes.c_void_p
    _connections: list[sqlite3.Connection] = []
    _connect = sqlite3.connect
    _taken = [0]

    def _kept(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = _connect(*args, **kwargs)
        _connections.append(conn)
        return conn

    sqlite3.connect = _kept

    def _sqlite_lines() -> list[str]:
        lines = [f"sqlite_memory_used {_lite.sqlite3_memory_used()}"]
        for conn in _connections:
            db = ctypes.c_void_p.from_address(id(conn) + 16).value
            if not db:  # closed
                continue
            used = []
            for op in (1, 2, 3):  # SQLITE_DBSTATUS_CACHE_USED, _SCHEMA_USED, _STMT_USED
                cur, high = ctypes.c_int(), ctypes.c_int()
                _lite.sqlite3_db_status(db, op, ctypes.byref(cur), ctypes.byref(high), 0)
                used.append(cur.value)
            lines.append("connection cache {} schema {} statements {}".format(*used))
            stmt = _lite.sqlite3_next_stmt(db, None)
            while stmt:
                sql = " ".join((_lite.sqlite3_sql(stmt) or b"").decode(errors="replace").split())
                memory = _lite.sqlite3_stmt_status(stmt, 99, 0)  # SQLITE_STMTSTATUS_MEMUSED
                lines.append(f"  statement {memory} {len(sql)} {sql[:160]}")
                stmt = _lite.sqlite3_next_stmt(db, stmt)
        return lines

    def _dump(_sig: int, _frame: object) -> None:
        _taken[0] += 1
        n = _taken[0]
        pid = os.getpid()
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        lines = [
            Path(f"/proc/{pid}/smaps_rollup").read_text(),
            f"threads {len(os.listdir(f'/proc/{pid}/task'))}",
            f"pymalloc_blocks {sys.getallocatedblocks()}",
            f"gc_tracked {sum(types.values())} frozen {gc.get_freeze_count()}",
            *_sqlite_lines(),
            *(f"type {k} {v}" for k, v in sorted(types.items())),
        ]
        (_OUT / f"probe-{n}.txt").write_text("\n".join(lines) + "\n")
        fp = _libc.fopen(str(_OUT / f"malloc-{n}.xml").encode(), b"w")
        _libc.malloc_info(0, ctypes.c_void_p(fp))
        _libc.fclose(ctypes.c_void_p(fp))

    def _trim(_sig: int, _frame: object) -> None:
        _libc.malloc_trim(0)

    def _collect(_sig: int, _frame: object) -> None:
        """A complete collection; what it finds unreachable (reference cycles: what a frozen
        connection leaves until then) goes by type to <dir>/garbage-<n>.txt."""
        _taken[0] += 1
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = Counter(type(o).__qualname__ for o in gc.garbage)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        lines = [f"{v} {k}" for k, v in found.most_common()]
        (_OUT / f"garbage-{_taken[0]}.txt").write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, _dump)
    signal.signal(signal.SIGUSR2, _trim)
    signal.signal(signal.SIGWINCH, _collect)
