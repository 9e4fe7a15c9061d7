"""Helpers the suites share: the demo's accounts as actors, and the floor's trick of
replaying, on a bare DBAPI connection, the exact statements a core function sent."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, select
from sqlmodel import Session

from benchmarks.context import Ctx
from core.actor import Actor
from core.models import User
from core.vocab import Role


def actor(ctx: Ctx, role: Role) -> Actor:
    """The demo's own account for `role` (`coordinator`, `manager` and `admin` share the
    first team), else the first active user with that role."""
    key = f"actor:{role.value}"
    if key not in ctx.cache:
        with Session(ctx.engine) as session:
            user = session.execute(
                select(User).where(User.username == role.value)).scalars().first()
            if user is None:
                user = session.execute(select(User).where(User.role == role.value)
                                       .order_by(User.id)).scalars().first()
            if user is None:
                raise RuntimeError(f"the benchmark database has no {role.value}")
            ctx.cache[key] = Actor(user_id=user.id, username=user.username,
                                   role=Role(user.role), team_id=user.team_id)
    return ctx.cache[key]


@dataclass
class Captured:
    statement: str
    parameters: Any
    many: bool


@contextmanager
def capture(engine: Engine):  # noqa: ANN201
    """Collect every statement (as sent to the driver, parameters bound) while active."""
    seen: list[Captured] = []

    def hook(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.strip().upper() in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"):
            return
        if statement.strip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            return
        seen.append(Captured(statement, parameters, executemany))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def replay(ctx: Ctx, con: Any, statements: list[Captured], *, write: bool,
           prepare: bool = False) -> None:
    """Run the captured statements on a bare connection in one transaction, fetching
    every row; a writing replay is rolled back so the database stays as it was.
    `prepare=True` prepares them on a PostgreSQL server at their first run, as the
    measured code does for the same statements (psycopg would wait for the fifth)."""
    options = {"prepare": True} if prepare and not ctx.is_sqlite else {}
    if ctx.is_sqlite:
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    else:
        con.execute("BEGIN")
    try:
        cur = con.cursor()
        for st in statements:
            if st.many:
                cur.executemany(st.statement, st.parameters)
            else:
                cur.execute(st.statement, st.parameters, **options)
                if cur.description is not None:
                    cur.fetchall()
        cur.close()
    finally:
        con.execute("ROLLBACK")


def captured_run(ctx: Ctx, fn: Callable[[Session], Any], *, write: bool = False
                 ) -> tuple[Any, list[Captured]]:
    """Run `fn(session)` once, rolled back, and return its result and its statements."""
    from core.db import session_scope

    with capture(ctx.engine) as seen:
        try:
            with session_scope(ctx.engine, write=write) as session:
                result = fn(session)
                raise _Rollback(result)
        except _Rollback as rb:
            result = rb.result
    return result, list(seen)


class _Rollback(Exception):
    def __init__(self, result: Any):
        super().__init__("rollback")
        self.result = result
