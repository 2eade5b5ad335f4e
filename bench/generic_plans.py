"""The inbox on PostgreSQL once its statements run on generic plans (issue #10 point 3).

asyncpg keeps each statement prepared; PostgreSQL plans a prepared statement for its parameter
values 5 times, then switches to one generic plan when statistics say it costs no more. A
store loaded by `bench/history.py` has no statistics until `ANALYZE`: the switch, and a plan
that flips, happen only after it. Run on a copy of a history template that has been analysed
(never on the template itself; the read-all users are consumed):

    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE x TEMPLATE clarion_hist_1000000_<key>"
    psql -h 127.0.0.1 -U postgres -d x -c ANALYZE
    python bench/generic_plans.py cpu postgresql://postgres@127.0.0.1:5432/x --read-all hist-r0-0
    python bench/generic_plans.py explain postgresql://postgres@127.0.0.1:5432/x

`cpu`: per operation of `hist-main`, after 8 unmeasured calls (past the 5 custom plans), the
median wall ms and the database backends' CPU ms per call (`/proc/<pid>/schedstat`). `explain`:
`EXPLAIN (ANALYZE, BUFFERS)` of the facts query's irregular-routes part for `hist-main`'s `all`
window and of a hidden-routes count, as generic plans (`--mode force_custom_plan` for the
others). To compare with another checkout, run it with that checkout's `src` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, select, text

from clarion.inbox import PagePosition
from clarion.store import SQLStore, holes
from clarion.store.inbox import _marks_and_irregular, load_facts

USER = "hist-main"
WARM = 8


def cpu_ns(pids: list[int]) -> int:
    """CPU time the processes have run, ns (those gone since count nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total


async def backends(store: SQLStore) -> list[int]:
    async with store.db.read() as conn:
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        return [row[0] for row in (await conn.execute(text(sql))).all()]


async def timed(
    store: SQLStore, name: str, calls: list[Callable[[], Awaitable[Any]]], warm: bool
) -> None:
    if warm:
        for _ in range(WARM):
            await calls[0]()
    pids = await backends(store)
    before, walls = cpu_ns(pids), []
    for call in calls:
        start = time.perf_counter()
        await call()
        walls.append((time.perf_counter() - start) * 1000)
    spent = (cpu_ns(pids) - before) / 1e6 / len(calls)
    print(f"{name}\t{statistics.median(walls):.1f}\t{spent:.2f}", flush=True)


async def cpu(url: str, reps: int, read_all: list[str]) -> None:
    store = SQLStore(url)
    await store.connect()
    try:
        start = PagePosition.decode(None)
        first = await store.list_inbox(USER, "all", 20, start)
        cursor = PagePosition.decode(first.next_cursor)
        ops: dict[str, Callable[[], Awaitable[Any]]] = {
            "first page, all": lambda: store.list_inbox(USER, "all", 20, start),
            "first page, archived": lambda: store.list_inbox(USER, "archived", 20, start),
            "next page": lambda: store.list_inbox(USER, "all", 20, cursor),
            "unread count": lambda: store.counts(USER),
            "connect snapshot": lambda: store.snapshot(USER, []),
        }
        print("operation\twall ms (median)\tdatabase CPU ms per call")
        for name, op in ops.items():
            await timed(store, name, [op] * reps, warm=True)
        if read_all:
            calls = [lambda u=u: store.change_state(u, "read_all", None) for u in read_all]
            await timed(store, "read-all", calls, warm=False)
    finally:
        await store.close()


def _literal(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def explained(conn: Connection, mode: str, stmt: Any, params: dict[str, Any]) -> str:
    """`stmt` prepared and run once under `plan_cache_mode = mode`, with its plan."""
    state = stmt.compile(dialect=conn.dialect).construct_expanded_state(params)
    conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {mode}")
    conn.exec_driver_sql("PREPARE bench_plan AS " + state.statement)
    args = ", ".join(_literal(v) for v in state.positional_parameters)
    sql = f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) EXECUTE bench_plan({args})"
    rows = conn.exec_driver_sql(sql).all()
    conn.exec_driver_sql("DEALLOCATE bench_plan")
    return "\n".join(row[0] for row in rows)


async def explain(url: str, mode: str) -> None:
    store = SQLStore(url)
    await store.connect()

    def run(conn: Connection) -> None:
        (facts,) = load_facts(conn, [(USER, ())], {}, datetime.now(UTC))
        view = facts.views["all"]
        lo, hi = view.unread_from, view.hi
        print(f"-- irregular routes of {USER}'s `all` window ({lo} < seq <= {hi}), {mode}")
        window = {"users": [USER], "s0": "all", "lo0": lo, "hi0": hi, "now": datetime.now(UTC)}
        print(explained(conn, mode, _marks_and_irregular(1), window))
        print(f"-- hidden routes of `all`'s last bucket, {mode}")
        hidden = select(holes.hidden_in("w0", bindparam("s0"), False, False))
        print(explained(conn, mode, hidden, {"s0": "all", "w0a": hi - 1023, "w0b": hi}))

    try:
        async with store.db.write() as conn:  # PREPARE and EXPLAIN only: nothing is written
            await store.db.run(conn, run)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["cpu", "explain"])
    parser.add_argument("url", help="postgresql://... of an analysed copy of a history store")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--read-all", default="", help="comma-separated users to read-all")
    parser.add_argument("--mode", default="force_generic_plan")
    args = parser.parse_args()
    if args.what == "cpu":
        users = [u for u in args.read_all.split(",") if u]
        asyncio.run(cpu(args.url, args.reps, users))
    else:
        asyncio.run(explain(args.url, args.mode))


if __name__ == "__main__":
    main()
