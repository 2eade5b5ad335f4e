"""A publish's inserts and in-app choices on SQLite, without SQLAlchemy binding them row by row.

At 16 publishes a commit a third of the transaction's CPU was SQLAlchemy building each row's
parameters for the inserts (a dict of binds per row, then a tuple through each column's
processor: docs/benchmarks.md). Inside the one-trip transaction (store/inline.py) the rows go
instead as one `executemany` of a text compiled once per table and set of columns, each value
through the bind processor SQLAlchemy's own SQLite dialect gives its column, so what is stored
is what SQLAlchemy would store. The statement goes to the `sqlite3` connection itself (no
execution context, no cursor events: bench/explain.py does not see these inserts), and its
errors are raised as SQLAlchemy raises them (`IntegrityError`, which the group commit redoes
one draft at a time; the rest `DBAPIError`, a 503 through `Database`'s guard).

The in-app choices query every publish runs (store/fatigue.py) is read the same way
(`select_in`): its text rendered once per size of its `IN` lists, its rows through the result
processors SQLAlchemy would apply.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.exc import DBAPIError

from clarion.store.batches import IN_CHUNK, padded

_DIALECT = SQLiteDialect_pysqlite()  # qmark, the dialect of store/sqlite_thread.py's engine


@dataclass(frozen=True, slots=True)
class Insert:
    """One table's INSERT of a set of columns: its SQL text, how a row's values are taken in
    the text's order, and the columns whose values go through a bind processor."""

    sql: str
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Each row as the positional parameters of `sql`."""
        values = self.values
        if not self.processors:
            return [values(r) for r in rows]
        out: list[tuple[Any, ...]] = []
        for r in rows:
            row = list(values(r))
            for i, process in self.processors:
                row[i] = process(row[i])
            out.append(tuple(row))
        return out


@functools.cache
def compiled(table: Table, keys: tuple[str, ...]) -> Insert:
    """The INSERT of `keys` into `table` (any order: the text's is the table's), built once."""
    done = insert(table).compile(dialect=_DIALECT, column_keys=list(keys))
    order = list(done.positiontup or ())
    processors = []
    for i, name in enumerate(order):
        type_ = table.c[name].type
        process = type_.dialect_impl(_DIALECT).bind_processor(_DIALECT)
        if process is not None:
            processors.append((i, process))
    get = itemgetter(*order)
    values = get if len(order) > 1 else lambda row: (get(row),)
    return Insert(str(done), values, tuple(processors))


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """`rows` (each with the first one's keys, as `conn.execute(insert(table), rows)` takes
    them) into `table`, on a synchronous SQLite connection, in its transaction."""
    if not rows:
        return
    one = compiled(table, tuple(rows[0]))
    params = one.params(rows)
    lite: Any = conn.connection.driver_connection  # the lent `sqlite3` one (sqlite_thread.py)
    try:
        lite.executemany(one.sql, params)
    except sqlite3.Error as exc:  # as SQLAlchemy raises it: IntegrityError, OperationalError...
        raise DBAPIError.instance(one.sql, params, exc, sqlite3.Error, ismulti=True) from exc


@dataclass(frozen=True, slots=True)
class Select:
    """A SELECT with expanding `IN` lists rendered at one size each: its SQL text, the order
    its parameters go in (list name, index), and each selected column's result processor."""

    sql: str
    order: tuple[tuple[str, int], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


@functools.cache
def compiled_select(stmt: Any, sizes: tuple[tuple[str, int], ...]) -> Select:
    """`stmt` (built once, its `IN` lists `bindparam(name, expanding=True)`) with each named
    list rendered at its size, as SQLAlchemy renders it for a list of that size."""
    lists = {name: [None] * size for name, size in sizes}
    done = stmt.params(lists).compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    order = []
    for key in done.positiontup or ():
        name, _, index = key.rpartition("_")
        order.append((name, int(index) - 1))
    processors = tuple(
        c.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None)
        for c in stmt.selected_columns
    )
    return Select(str(done), tuple(order), processors)


def select_in(
    conn: Connection, stmt: Any, lists: Mapping[str, Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """The rows of `stmt` for its `IN` lists `lists` (each non-empty), read by the `sqlite3`
    connection under `conn` in its transaction, each value through its column's result
    processor. Each list is padded (store/batches.py), so their sizes come in a few shapes;
    a list longer than `IN_CHUNK` runs through SQLAlchemy as one statement."""
    if any(len(values) > IN_CHUNK for values in lists.values()):  # one statement, as built
        return list(conn.execute(stmt, {name: list(v) for name, v in lists.items()}).all())
    padded_lists = {name: padded(values) for name, values in lists.items()}
    one = compiled_select(stmt, tuple((name, len(v)) for name, v in padded_lists.items()))
    params = tuple(padded_lists[name][i] for name, i in one.order)
    lite: Any = conn.connection.driver_connection
    try:
        rows = lite.execute(one.sql, params).fetchall()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(one.sql, params, exc, sqlite3.Error) from exc
    if not any(one.processors):
        return rows  # type: ignore[no-any-return]
    return [
        tuple(v if p is None else p(v) for v, p in zip(row, one.processors, strict=True))
        for row in rows
    ]
