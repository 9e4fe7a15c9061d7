"""Engine factory, session scope and migrations (DESIGN.md sections 2 and 3).

SQLite: WAL so readers never wait for a writer, `busy_timeout` so writers queue, foreign
keys on, and write transactions that begin with `BEGIN IMMEDIATE`: a deferred
transaction that reads then writes fails at once with "database is locked" whatever the
busy timeout says (FIELD-NOTES.md); taking the lock up front makes it wait instead.
PostgreSQL: psycopg 3, pre-ping, READ COMMITTED; compare-and-set updates do the rest.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from core import driver_sql
from core.config import get_settings
from core.errors import PermissionDenied

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 4000  # of 4 KiB
SQLITE_CACHE_KIB = 65_536
# Execution option carried by write sessions; the SQLite `begin` hook reads it.
_WRITE_OPTION = "casedesk_write"


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    # Sessions in UTC whatever the server's TimeZone: times come back as UTC (psycopg then
    # gives them datetime.UTC, which the queue's row builder takes as is instead of
    # converting ~150 values a page), and any SQL that reads the session's zone
    # agrees with the rest of the code, which keeps every time in UTC. Options already
    # given are kept: the URL's, and PGOPTIONS (libpq ignores that variable once a
    # connection names `options` itself).
    given = parsed.query.get("options") or ()
    given = [given] if isinstance(given, str) else list(given)  # a tuple if repeated
    options = " ".join(filter(None, [os.environ.get("PGOPTIONS"), *given, "-c TimeZone=UTC"]))
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10,
                         connect_args={"options": options})


def _create_private_file(path: Path) -> None:
    """A new database file is readable by its owner only (0600, whatever the umask): it
    holds patients' names and diagnoses. SQLite gives the -wal and -shm files the
    database file's permissions. An existing file is left as the operator set it."""
    if str(path).startswith("file:"):  # a URI filename: SQLite opens it as it says
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    database = parsed.database
    in_memory = database in (None, "", ":memory:")
    kwargs: dict = {"echo": echo, "connect_args": {"check_same_thread": False, "timeout": 30}}
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each sees its own DB
    else:
        _create_private_file(Path(database))
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        # Let SQLAlchemy's `begin` hook below issue BEGIN itself (pysqlite's own
        # transaction handling would start a deferred transaction behind our back).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs the WAL only at checkpoints, not at every commit. A
            # committed transaction is in the WAL file when COMMIT returns, so it survives
            # the application crashing or being killed; only a power loss or an operating
            # system crash can lose the last commits (never corrupt the database). FULL
            # would add an fsync to every move.
            cur.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint (copy the WAL back into the database, with its fsync) every
            # ~16 MB of WAL rather than every 4 MB: a page written by several moves in
            # between (the history's and the audit log's last pages, hot index pages) is
            # copied once, and fewer moves wait for a checkpoint.
            cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        # 64 MB of page cache per connection instead of 2 MB: at a million cases the
        # upper levels of the case table and its indexes, which every move walks, stay
        # in cache instead of being read again from the operating system.
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        # On the driver's cursor: every write transaction begins here, and
        # exec_driver_sql's execution context cost as much as SQLite's BEGIN itself. A
        # failure ("database is locked" after the busy timeout) still surfaces as
        # SQLAlchemy's OperationalError.
        driver_sql.execute_sql(
            conn, "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION)
            else "BEGIN")

    return engine


@lru_cache(maxsize=8)
def _cached_engine(url: str) -> Engine:
    return create_db_engine(url)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for the configured database (one pool per URL)."""
    return _cached_engine(url or get_settings().database_url)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


# How many session_scopes this thread has open: a refusal is audited only once the
# outermost one has rolled back, so the audit write never waits (on SQLite, forever) for
# a lock held by an enclosing transaction of the same thread.
_scopes = threading.local()


@contextmanager
def session_scope(engine: Engine | None = None, *, write: bool = True,
                  plain_reads: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error, always close.

    `write=False` is for pages and reports that only read: on SQLite they run in a
    deferred transaction and never queue behind writers (WAL).

    `plain_reads=True` (with write=False) is for a page's few plain SELECTs on
    PostgreSQL: each runs in autocommit, with no BEGIN and COMMIT round trips around
    them (two of a queue page's four; at a million cases ~0.35 ms of ~6). Under READ
    COMMITTED each statement reads its own snapshot anyway, so the rows are the same;
    not for server-side cursors (`stream_results`), which need a transaction. SQLite
    ignores it: its deferred read transaction costs no round trip.

    A PermissionDenied leaving the outermost scope is audited (`access.denied`, outcome
    denied) in a transaction of its own after the rollback - every page, CLI command and
    job goes through here, so no refusal goes unrecorded.
    """
    engine = engine or get_engine()
    if write:
        bind = _write_bind(engine)
    elif plain_reads and engine.dialect.name == "postgresql":
        bind = _autocommit_bind(engine)
    else:
        bind = engine
    depth = getattr(_scopes, "depth", 0)
    _scopes.depth = depth + 1
    try:
        with Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    except PermissionDenied as denied:
        if depth == 0:
            _scopes.depth = 0
            _audit_denial(engine, denied)
        raise
    finally:
        _scopes.depth = depth


@contextmanager
def sqlite_page_cache(conn: Connection, kib: int) -> Iterator[None]:
    """SQLite: this connection's page cache at `kib` KiB while the block runs, then back
    to the size it had - also after an error or an early return, so a pooled connection
    never keeps another job's size. The pool's connections keep SQLITE_CACHE_KIB for
    pages read again; a scan, which revisits pages, wants more, and a one-pass export
    none. Other databases: nothing."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())

    def set_size(size: int) -> None:
        conn.exec_driver_sql(f"PRAGMA cache_size={size}")

    set_size(-kib)
    try:
        yield
    except BaseException:
        with suppress(Exception):  # the error in flight matters more than the size
            set_size(before)
        raise
    set_size(before)


def _write_bind(engine: Engine) -> Engine:
    return _bound(engine, "_casedesk_write_bind", **{_WRITE_OPTION: True})


def _autocommit_bind(engine: Engine) -> Engine:
    return _bound(engine, "_casedesk_autocommit_bind", isolation_level="AUTOCOMMIT")


def _bound(engine: Engine, key: str, **options: object) -> Engine:
    """The engine with execution `options`, made once per engine and kept on it under
    `key`: building it costs more than a whole read transaction, and every transaction
    of its kind asks for it."""
    bind = engine.__dict__.get(key)
    if bind is None:
        bind = engine.__dict__[key] = engine.execution_options(**options)
    return bind


def _audit_denial(engine: Engine, denied: PermissionDenied) -> None:
    if denied.audited or denied.actor is None:
        return
    from core import audit
    from core.timeutil import utcnow
    from core.vocab import AuditOutcome

    try:
        audit.record_now(engine, actor=denied.actor, action="access.denied", now=utcnow(),
                         case_id=denied.case_id, outcome=AuditOutcome.DENIED,
                         detail={"action": denied.action, "team_id": denied.team_id,
                                 "message": str(denied)})
        denied.audited = True
    except Exception:  # never hide the refusal behind an audit failure; log it instead
        logging.getLogger(__name__).exception("could not audit a permission denial")


# --- migrations -------------------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine):  # noqa: ANN201 - alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine | None = None) -> str:
    """Create or upgrade the database to the newest migration; returns the revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    engine = engine or get_engine()
    with engine.connect() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
    command.upgrade(alembic_config(engine), "head")
    with engine.connect() as conn:
        after = MigrationContext.configure(conn).get_current_revision() or ""
    if after != before and engine.dialect.name == "postgresql":
        # A migration's backfill rewrites rows, which clears their pages' all-visible
        # bits: until a VACUUM, index-only scans fetch every such row from the heap
        # (the funnel's count at a million cases: 1.07 s instead of milliseconds).
        refresh_planner_statistics(engine)
    return after


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("cases")


def refresh_planner_statistics(engine: Engine) -> None:
    """Give the query planner fresh statistics: after the demo's bulk load, and nightly
    from the worker (issue 8).

    Without `sqlite_stat1` SQLite guesses: for the coordinator's queue (`team_id = ? AND
    assignee_id = ?`) it walked ix_cases_team_state - every case of the team - instead of
    ix_cases_assignee_state, 25 ms instead of 5 ms of CPU at 100,000 cases and ten times
    that at 1,000,000. `analysis_limit` keeps ANALYZE to a sample (about a second at a
    million cases).

    PostgreSQL: VACUUM (ANALYZE), outside a transaction. Besides statistics it sets the
    visibility map, which index-only scans (the funnel, stage times, the queue) depend on:
    every updated row clears its page's all-visible bit, and autovacuum waits for 20 % of
    a table to change (200,000 case updates at a million cases) - meanwhile the funnel's
    counts read the heap (a bitmap heap scan, 1.07 s instead of milliseconds). VACUUM
    skips pages that are still all-visible, so a nightly run costs little.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
