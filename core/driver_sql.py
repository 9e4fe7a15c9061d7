"""Fixed Core statements run straight on the DBAPI cursor, inside the caller's transaction.

The write path sends the same few statements for every change of a case (issue 8: the
case's load, the compare-and-set UPDATE, the history row, the audit row, the savepoint).
Through `Connection.execute` each one pays for SQLAlchemy's execution context, events and
result object - measured at a million cases, about as much CPU as SQLite's own work for
the statement. Here each
statement is compiled once per database dialect and set of parameter names, and then
only its parameters are converted (the same bind processors SQLAlchemy would apply:
timestamps as SQLite stores them, booleans, ...) and handed to the driver's cursor; a
row read back is converted with SQLAlchemy's result processors (text to aware datetimes
on SQLite, ...).

The SQL is the one SQLAlchemy renders for the dialect, so PostgreSQL (psycopg) and SQLite
run exactly what `Connection.execute` would have run, on the same connection and in the
same transaction. What is lost: these statements do not pass through SQLAlchemy's
`before_cursor_execute` events or echo logging. Driver errors are wrapped the way
SQLAlchemy wraps them (sqlalchemy.exc.IntegrityError, ...), so callers see no difference.

Only statements that need nothing computed at execution time qualify (no Python-side
column defaults or onupdate values, no expanding IN); anything else goes through
`Connection.execute` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


class _Prepared:
    """One statement compiled for one dialect and one set of parameter names."""

    __slots__ = ("sql", "compiled", "processors", "positions", "columns")

    def __init__(self, stmt: ClauseElement, conn: Connection, names: list[str]) -> None:
        compiled = stmt.compile(dialect=conn.dialect, column_keys=names)
        self.compiled = compiled
        self.sql = compiled.string
        self.processors: Mapping[str, Callable[[Any], Any]] = compiled._bind_processors
        # qmark (sqlite3) takes a sequence in this order; pyformat (psycopg) a mapping
        self.positions = compiled.positiontup if compiled.positional else None
        # a SELECT's columns: their names and how a value is read (text as datetime, ...)
        self.columns = [(key, type_._cached_result_processor(conn.dialect, None))
                        for key, _name, _objects, type_ in compiled._result_columns]

    @staticmethod
    def qualifies(stmt: ClauseElement, conn: Connection, names: list[str]) -> bool:
        compiled = stmt.compile(dialect=conn.dialect, column_keys=names)
        return not (compiled.insert_prefetch or compiled.update_prefetch
                    or compiled.literal_execute_params or compiled.post_compile_params)

    def arguments(self, params: Mapping[str, Any]) -> Any:
        values = self.compiled.construct_params(params)
        processors = self.processors
        for name, process in processors.items():
            if name in values:
                values[name] = process(values[name])
        if self.positions is None:
            return values
        return [values[name] for name in self.positions]


# (statement id, dialect, parameter names) -> (the statement, its preparation or None if
# it cannot run on the cursor). The statement is kept and compared, so an id reused by a
# statement built later can never pick up another statement's SQL.
_prepared: dict[tuple[Any, ...], tuple[ClauseElement, _Prepared | None]] = {}


def execute(conn: Connection, stmt: ClauseElement, params: Mapping[str, Any]) -> Outcome:
    """Run `stmt` (a module-level statement, built once) with `params` on the cursor of
    `conn`'s DBAPI connection: the rows it changed, and its first row (RETURNING)."""
    prepared = _prepare(conn, stmt, params)
    if prepared is None:  # needs SQLAlchemy at execution time: the ordinary way
        result = conn.execute(stmt, params)
        return Outcome(result.rowcount, result.first() if result.returns_rows else None)
    cursor = _run(conn, prepared, params)
    try:
        return Outcome(cursor.rowcount,
                       cursor.fetchone() if cursor.description is not None else None)
    finally:
        cursor.close()


def _prepare(conn: Connection, stmt: ClauseElement, params: Mapping[str, Any]) \
        -> _Prepared | None:
    dialect = conn.dialect
    # what the rendered SQL depends on besides the statement: the database, its version
    # and the driver's placeholder style
    key = (id(stmt), dialect.name, dialect.server_version_info, dialect.paramstyle,
           frozenset(params))
    known = _prepared.get(key)
    if known is None or known[0] is not stmt:
        names = list(params)
        known = _prepared[key] = (
            stmt,
            _Prepared(stmt, conn, names) if _Prepared.qualifies(stmt, conn, names) else None)
    return known[1]


def _run(conn: Connection, prepared: _Prepared, params: Mapping[str, Any]) -> Any:
    args = prepared.arguments(params)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(prepared.sql, args)
    except conn.dialect.loaded_dbapi.Error as err:
        cursor.close()
        raise DBAPIError.instance(prepared.sql, args, err, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from err
    return cursor


def fetch_first(conn: Connection, stmt: ClauseElement,
                params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first row of a SELECT as {column name: value}, values converted as SQLAlchemy
    converts them; None without a row."""
    prepared = _prepare(conn, stmt, params)
    if prepared is None:
        row = conn.execute(stmt, params).first()
        return None if row is None else dict(row._mapping)
    cursor = _run(conn, prepared, params)
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None:
        return None
    return {key: value if process is None else process(value)
            for (key, process), value in zip(prepared.columns, row, strict=True)}


def fetch_all(conn: Connection, sql: str, args: Any, *,
              prepare: bool = False) -> list[tuple[Any, ...]]:
    """Every row of an already compiled SELECT (`sql` in the dialect's placeholder style,
    `args` already converted for the driver) as the driver's plain tuples, with values
    as the driver gives them (no result processors).

    `prepare=True` (PostgreSQL; ignored elsewhere) makes psycopg prepare the statement on
    the server at its first run on a connection instead of its fifth: for a statement
    sent at every rerun of a page whose planning costs as much as its execution.

    While anything listens to the engine's cursor events or echo is on, the statement
    goes through `exec_driver_sql` instead, so instrumentation, logging and tests that
    capture statements still see it."""
    if conn.dispatch.before_cursor_execute or conn.dispatch.after_cursor_execute \
            or conn.engine.echo:
        return conn.exec_driver_sql(sql, args).fetchall()
    pooled = conn.connection
    cursor = pooled.driver_connection.cursor()
    try:
        if prepare and conn.dialect.name == "postgresql":
            cursor.execute(sql, args, prepare=True)
        else:
            cursor.execute(sql, args)
        rows = cursor.fetchall()
    except conn.dialect.loaded_dbapi.Error as err:
        # As Connection.execute would: a lost connection is invalidated, so the pool
        # does not hand it out again.
        lost = conn.dialect.is_disconnect(err, pooled.dbapi_connection, cursor)
        cursor.close()
        if lost:
            conn.invalidate(err)
        raise DBAPIError.instance(sql, args, err, conn.dialect.loaded_dbapi.Error,
                                  connection_invalidated=lost,
                                  dialect=conn.dialect) from err
    cursor.close()
    return rows


def execute_sql(conn: Connection, sql: str) -> None:
    """A fixed statement without parameters (SAVEPOINT, RELEASE ...) on the cursor."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as err:
        raise DBAPIError.instance(sql, (), err, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from err
    finally:
        cursor.close()


class Outcome(NamedTuple):
    rowcount: int
    row: Any  # the first row a RETURNING gave (a plain tuple), else None
