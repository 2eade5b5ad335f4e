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

The inbox's reads (`query`, on both databases) and the in-app choices query every publish runs
(store/fatigue.py, `select_in`) are read the same way: each text compiled once per shape of its
`IN` lists, its parameters bound in one pass, its rows through the result processors
SQLAlchemy would apply.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

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


def select_in(conn: Connection, stmt: Any, lists: Mapping[str, Sequence[Any]]) -> list[Any]:
    """The rows of `stmt` for its `IN` lists `lists` (each non-empty), read as `query` reads
    them. Each list is padded (store/batches.py), so their sizes come in a few shapes; a list
    longer than `IN_CHUNK` runs through SQLAlchemy as one statement."""
    if any(len(values) > IN_CHUNK for values in lists.values()):  # one statement, as built
        return list(conn.execute(stmt, {name: list(v) for name, v in lists.items()}).all())
    return query(conn, stmt, {name: padded(values) for name, values in lists.items()})


@dataclass(frozen=True, slots=True)
class Query:
    """A statement compiled once for SQLite with each `IN` list at one size: its text, and per
    `?` the parameter (or the item of a list parameter) it takes, the statement's own value
    when the parameter is not given, and the bind processor; each column's result processor."""

    sql: str
    args: tuple[tuple[str, int, Any, Callable[[Any], Any] | None], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    row: Any  # a named tuple of the selected columns (rows read as `row.seq` or `row[1]`)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, index, default, process in self.args:
            if index >= 0:
                value = values[name][index]
            elif default is _REQUIRED:
                value = values[name]
            else:  # the statement's own value (`seq + 0`), processed once
                out.append(default)
                continue
            out.append(value if process is None else process(value))
        return tuple(out)


_REQUIRED = object()


@functools.lru_cache(maxsize=256)
def literal_names(stmt: Any) -> tuple[str, ...]:
    """The parameters `stmt` renders into its text (`literal_execute`, as a `LIMIT`)."""
    binds = (e for e in visitors.iterate(stmt) if isinstance(e, BindParameter))
    return tuple(sorted({e.key for e in binds if e.literal_execute}))


@functools.lru_cache(maxsize=2048)
def compiled_query(
    stmt: Any,
    names: tuple[str, ...],
    sizes: tuple[int | None, ...],
    literals: tuple[Any, ...],
    dialect: Any = _DIALECT,
) -> Query:
    """`stmt` for parameters `names`, each list one (its size in `sizes`, else None) rendered
    at its size as SQLAlchemy renders it, and the `literal_names` rendered as `literals`."""
    given: dict[str, Any] = {
        n: None if size is None else [None] * size for n, size in zip(names, sizes, strict=True)
    }
    given |= dict(zip(literal_names(stmt), literals, strict=True))
    done = stmt.params(given).compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    args = []
    for key in done.positiontup or ():
        name, index = key, -1
        base, _, number = key.rpartition("_")
        if number.isdigit() and isinstance(given.get(base), list):
            name, index = base, int(number) - 1
        bind = done.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        default: Any = _REQUIRED
        if name not in given:  # a value of the statement's own (`seq + 0`)
            value = bind.effective_value
            default = value if process is None else process(value)
        args.append((name, index, default, process))
    processors = tuple(
        c.type.dialect_impl(dialect).result_processor(dialect, None) for c in stmt.selected_columns
    )
    keys = [entry.keyname for entry in done._result_columns]  # as SQLAlchemy's rows name them
    row = namedtuple("Row", keys, rename=True)  # type: ignore[misc]
    return Query(str(done), tuple(args), processors, row)


def query(conn: Connection, stmt: Any, values: Mapping[str, Any]) -> list[Any]:
    """The rows of the SELECT `stmt` (built once: its identity keys the compiled text) for
    `values`, lists for its expanding `IN` parameters, read in `conn`'s transaction without
    SQLAlchemy's execution machinery: the text compiled once per shape, the parameters bound
    in one pass, each value through the processors SQLAlchemy applies. For the inbox's reads,
    each a few hundred parameters, SQLAlchemy spent about 3x SQLite's own time binding them
    (docs/benchmarks.md). On SQLite the `sqlite3` connection runs it; on PostgreSQL the
    driver's cursor as SQLAlchemy adapts it (asyncpg's prepared statements, in the greenlet of
    `Database.run`)."""
    lite = conn.dialect.name == "sqlite"
    dialect = _DIALECT if lite else conn.dialect
    names = tuple(values)
    sizes = tuple(len(v) if isinstance(v, list | tuple) else None for v in values.values())
    literals = tuple(values[n] for n in literal_names(stmt))
    one = compiled_query(stmt, names, sizes, literals, dialect)
    params = one.params(values)
    for watch in WATCHERS:
        watch(one.sql)
    driver: Any = conn.connection.driver_connection if lite else conn.connection.dbapi_connection
    errors = sqlite3.Error if lite else dialect.loaded_dbapi.Error
    try:
        if lite:
            rows = driver.execute(one.sql, params).fetchall()
        else:
            cursor = driver.cursor()
            try:
                cursor.execute(one.sql, params)
                rows = cursor.fetchall()
            finally:
                cursor.close()
    except errors as exc:  # as SQLAlchemy raises it: OperationalError, IntegrityError...
        raise DBAPIError.instance(one.sql, params, exc, errors) from exc
    make = one.row._make
    if not any(one.processors):
        return [make(row) for row in rows]
    return [
        make(v if p is None else p(v) for v, p in zip(row, one.processors, strict=True))
        for row in rows
    ]


# Called with each SQL text `query` runs, which SQLAlchemy's cursor events do not see (tests
# that collect the texts a call runs).
WATCHERS: list[Callable[[str], None]] = []
