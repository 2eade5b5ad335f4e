"""The plans of the inbox's per-stream queries, as the database makes them for a prepared
statement without planning for its parameters (PostgreSQL's generic plan, which a statement
in asyncpg's cache gets after 5 runs once statistics make it look as cheap; on SQLite, the
plan of the prepared statement).

Issue #10 point 3: the intended index must be the only plan, whatever the statistics. The
irregular, hidden and expired-but-not-swept routes of a window are read through partial
indexes; a generic plan can use one only if the statement states the index's predicate as a
constant. With a bound `irregular = $n` PostgreSQL walked the stream's whole window on the
primary key: 103-121 ms per call at 1,000,000 stored once `ANALYZE` made the generic plan look
cheap.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, text

from clarion.store import SQLStore, holes
from clarion.store.inbox import _marks_and_irregular

WINDOW = {"s0": "all", "lo0": 0, "hi0": 5000, "now": datetime.now(UTC)}


def _sql_literal(value: Any) -> str:
    """A parameter value as a SQL literal (test inputs only: strings, ints and instants)."""
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"unexpected parameter {value!r}")
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def generic_plan(conn: Connection, stmt: Any, params: dict[str, Any]) -> str:
    """The plan the database uses for `stmt` prepared once and run with `params` without
    planning for their values."""
    state = stmt.compile(dialect=conn.dialect).construct_expanded_state(params)
    sql = state.statement
    ordered = [v.isoformat() if isinstance(v, datetime) else v for v in state.positional_parameters]
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(ordered))
        return "\n".join(str(r[-1]) for r in rows.all())
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql("PREPARE plan_probe AS " + sql)
    try:
        args = ", ".join(_sql_literal(v) for v in ordered)
        rows = conn.exec_driver_sql(f"EXPLAIN (COSTS OFF) EXECUTE plan_probe({args})")
        return "\n".join(str(r[0]) for r in rows.all())
    finally:
        conn.exec_driver_sql("DEALLOCATE plan_probe")


async def plan_of(store: SQLStore, stmt: Any, params: dict[str, Any]) -> str:
    async with store.db.write() as conn:
        return await store.db.run(conn, lambda c: generic_plan(c, stmt, params))


async def test_irregular_routes_of_a_window_are_read_on_their_partial_index(
    sql_store: SQLStore,
) -> None:
    plan = await plan_of(sql_store, _marks_and_irregular(1), {"users": ["u1"], **WINDOW})
    assert "ix_routes_irregular" in plan, plan


async def test_expired_routes_of_a_window_are_read_on_their_partial_index(
    sql_store: SQLStore,
) -> None:
    """Regular routes expired and not swept yet are found by (stream, expires_at <= now) on
    `ix_routes_expiring`, never by walking the window: the live expiring routes of a stream
    (all of them, where every notification has a ttl) are not read."""
    plan = await plan_of(sql_store, _marks_and_irregular(1), {"users": ["u1"], **WINDOW})
    assert "ix_routes_expiring" in plan, plan
    at = plan.index("ix_routes_expiring")
    assert re.search(r"expires_at ?<", plan[at : at + 150]), plan  # the index's range


async def test_hidden_routes_of_a_window_are_counted_on_their_partial_index(
    sql_store: SQLStore,
) -> None:
    stmt = select(holes.hidden_in("w0", bindparam("s0"), False, False))
    plan = await plan_of(sql_store, stmt, {"s0": "all", "w0a": 0, "w0b": 1000})
    assert "ix_routes_hidden" in plan, plan


async def test_expired_routes_stay_on_their_partial_index_once_analysed(pg_url: str) -> None:
    """With statistics of a large stream, PostgreSQL's generic plan for the expired part
    walked the window on the primary key when the seq range was written on `seq` (275,000
    rows filtered for 32, 115 ms at 1,000,000 stored); on `seq + 0` only the partial index
    fits."""
    store = SQLStore(pg_url)
    await store.connect()
    try:
        async with store.db.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO routes (stream, seq, notification_id, type, n, expires_at)"
                    " SELECT 'analysed', g, 'n' || g, 'message', g,"
                    " CASE WHEN g % 50 = 0 THEN now() - interval '1 hour' END"
                    " FROM generate_series(1, 60000) AS g"
                )
            )
            await conn.execute(text("ANALYZE routes"))
        window = {"users": ["u1"], "s0": "analysed", "lo0": 0, "hi0": 60000}
        plan = await plan_of(store, _marks_and_irregular(1), {**window, "now": datetime.now(UTC)})
    finally:
        await store.close()
    assert "ix_routes_expiring" in plan, plan
    assert "routes_pkey" not in plan, plan


async def test_postgres_sessions_plan_once_and_alone(pg_url: str) -> None:
    """Clarion's PostgreSQL sessions use generic plans from the first run (its statements are
    shaped for them: the tests above), no parallel workers and no JIT (db.PG_CONNECT)."""
    store = SQLStore(pg_url)
    await store.connect()
    try:
        for engine in (store.db.reader, store.db.writer):
            async with engine.connect() as conn:
                shown = [
                    (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                    for name in ("plan_cache_mode", "max_parallel_workers_per_gather", "jit")
                ]
            assert shown == ["force_generic_plan", "0", "off"]
    finally:
        await store.close()
