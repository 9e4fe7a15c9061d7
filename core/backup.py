"""Backups and restores of the whole database, each checked before it is trusted.

SQLite: the online backup API (`sqlite3.Connection.backup`) copies a consistent snapshot
while the app keeps running - a plain file copy of a WAL database can miss committed
pages still in the -wal file. PostgreSQL: `pg_dump -Fc` / `pg_restore`, taken from the
newest installed server binaries (a pg_dump older than the server refuses to run).

After a restore the database must prove itself: `PRAGMA integrity_check` (SQLite), a
sanity query (tables present, schema revision), and the audit chain. Sessions copied
back from the backup are ended: a token signed out after the backup was taken must not
come back to life.

Backup files hold protected health information: they are written 0600, through a
temporary name, and their sha256 goes into the audit log.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, inspect, select, text, update
from sqlalchemy.engine import make_url

from core.actor import Actor
from core.audit import record, verify_chain
from core.db import session_scope
from core.errors import CaseDeskError, ValidationError
from core.models import Case, User, UserSession

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"


class BackupError(CaseDeskError):
    """A backup or restore could not be made or did not verify."""


@dataclass
class CheckReport:
    """What a restored (or freshly backed-up) database proved about itself."""

    integrity: str  # "ok", or what the check found
    audit_ok: bool
    audit_rows: int
    audit_problem: str | None
    revision: str | None
    cases: int
    users: int
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and self.audit_ok

    def summary(self) -> str:
        chain = (f"audit chain OK ({self.audit_rows:,} rows)" if self.audit_ok
                 else f"AUDIT CHAIN BROKEN: {self.audit_problem}")
        parts = [f"integrity {self.integrity}", chain,
                 f"schema revision {self.revision or 'none'}",
                 f"{self.cases:,} cases", f"{self.users:,} users", *self.notes]
        return "; ".join(parts)


@dataclass
class BackupResult:
    path: Path
    bytes: int
    sha256: str
    check: CheckReport | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if database in (None, "", ":memory:"):
        raise BackupError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(database)


def _private_tempfile(directory: Path, suffix: str) -> Path:
    """An empty 0600 file next to the target, so the final rename is atomic."""
    fd, name = tempfile.mkstemp(prefix=".casedesk-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(name, 0o600)
    return Path(name)


def _target_ready(target: Path, *, force: bool) -> None:
    if target.exists() and not force:
        raise ValidationError(f"{target} already exists; use --force to replace it.")
    if not target.parent.is_dir():
        raise ValidationError(f"Folder {target.parent} does not exist.")


# --- checks -------------------------------------------------------------------------------


def check_database(engine: Engine) -> CheckReport:
    """Integrity, audit chain and a sanity query on a database (live or restored)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
        integrity = "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:5])
    else:
        # PostgreSQL checksums its own pages; a damaged archive was already refused by
        # pg_restore --exit-on-error inside one transaction.
        integrity = "ok"
    tables = set(inspect(engine).get_table_names())
    missing = {"cases", "app_user", "audit_entry", "alembic_version"} - tables
    if missing:
        return CheckReport(f"missing tables: {', '.join(sorted(missing))}", False, 0,
                           "no audit table", None, 0, 0)
    with session_scope(engine, write=False) as session:
        chain = verify_chain(session)
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        cases = session.execute(select(func.count()).select_from(Case)).scalar_one()
        users = session.execute(select(func.count()).select_from(User)).scalar_one()
    return CheckReport(integrity, chain.ok, chain.rows, chain.problem, revision, cases, users)


def _end_restored_sessions(engine: Engine, *, now: datetime, actor: Actor,
                           source_sha256: str, check: CheckReport) -> int:
    with session_scope(engine) as session:
        ended = session.execute(
            update(UserSession).where(UserSession.ended_at.is_(None))
            .values(ended_at=now, end_reason="restored")
        ).rowcount
        record(session, actor=actor, action="backup.restore", now=now,
               detail={"sha256": source_sha256, "sessions_ended": ended,
                       "audit_rows": check.audit_rows, "revision": check.revision})
    return ended


# --- SQLite -------------------------------------------------------------------------------


def _sqlite_copy(source: sqlite3.Connection, dest_path: Path) -> None:
    dest = sqlite3.connect(dest_path)
    try:
        # All pages in one step: one consistent snapshot. In WAL mode the read lock this
        # holds does not stop writers, whereas copying in steps restarts whenever another
        # connection writes, and may never finish on a busy database.
        source.backup(dest)
        # A backup of a WAL database is itself marked WAL; make the copy a single
        # self-contained file with no -wal/-shm companions to forget.
        dest.execute("PRAGMA journal_mode=DELETE")
    finally:
        dest.close()


def _check_sqlite_file(path: Path) -> CheckReport:
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise BackupError(f"{path} is not a Case Desk SQLite backup.")
    # Read-only and without our engine's WAL switch, so checking a backup never changes
    # it or leaves -wal/-shm files beside it.
    probe = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        return check_database(probe)
    finally:
        probe.dispose()


def _backup_sqlite(engine: Engine, target: Path) -> None:
    source_path = _sqlite_path(engine)
    if not source_path.exists():
        raise BackupError(f"No database at {source_path}.")
    tmp = _private_tempfile(target.parent, ".db")
    try:
        source = sqlite3.connect(source_path, timeout=30)
        try:
            _sqlite_copy(source, tmp)
        finally:
            source.close()
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _restore_sqlite(engine: Engine, source: Path) -> None:
    target_path = _sqlite_path(engine)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    engine.dispose()  # drop our pooled connections to the file being replaced
    backup = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(target_path, timeout=30)
        try:
            # The backup API writes through SQLite's locking, so other processes see either
            # the old database or the new one, never a half-copied file.
            backup.backup(dest)
            dest.execute("PRAGMA journal_mode=WAL")
        finally:
            dest.close()
    finally:
        backup.close()
    engine.dispose()


# --- PostgreSQL ---------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Newest /usr/lib/postgresql/*/bin with pg_dump, else pg_dump on PATH."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin")
    candidates.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                    else 0, reverse=True)
    for candidate in candidates:
        if Path(candidate, "pg_dump").exists():
            return Path(candidate)
    found = shutil.which("pg_dump")
    return Path(found).parent if found else None


def _pg_tool(name: str) -> str:
    bindir = find_pg_bindir()
    if bindir is None or not (bindir / name).exists():
        raise BackupError(f"{name} not found: install the PostgreSQL client tools.")
    return str(bindir / name)


def _pg_conn(engine: Engine) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and an environment that carries it: a password
    on the command line would be visible to every user in the process list."""
    url = make_url(engine.url.render_as_string(hide_password=False))
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise BackupError(f"{what} failed: " + (" / ".join(message[-3:]) or "no output"))


def _backup_pg(engine: Engine, target: Path) -> None:
    conninfo, env = _pg_conn(engine)
    tmp = _private_tempfile(target.parent, ".dump")
    try:
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
              f"--file={tmp}", f"--dbname={conninfo}"], env, "pg_dump")
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _restore_pg(engine: Engine, source: Path) -> None:
    with source.open("rb") as fh:
        if fh.read(len(PGDUMP_MAGIC)) != PGDUMP_MAGIC:
            raise BackupError(f"{source} is not a pg_dump custom-format archive.")
    conninfo, env = _pg_conn(engine)
    engine.dispose()
    # One transaction: a failure half-way leaves the old database as it was.
    _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
          "--single-transaction", "--exit-on-error", f"--dbname={conninfo}", str(source)],
         env, "pg_restore")


# --- entry points -------------------------------------------------------------------------


def backup(engine: Engine, target: Path, *, actor: Actor, now: datetime,
           force: bool = False) -> BackupResult:
    """Write a backup of the database to `target` and audit it (file name, size, hash)."""
    target = Path(target).expanduser().resolve()
    _target_ready(target, force=force)
    if engine.dialect.name == "sqlite":
        if target == _sqlite_path(engine).resolve():
            raise ValidationError("The backup file cannot be the database itself.")
        _backup_sqlite(engine, target)
        check = _check_sqlite_file(target)
    else:
        _backup_pg(engine, target)
        check = None  # checked on restore; a dump cannot be opened in place
    digest = sha256_of(target)
    size = target.stat().st_size
    with session_scope(engine) as session:
        record(session, actor=actor, action="backup.create", now=now,
               detail={"file": target.name, "bytes": size, "sha256": digest})
    return BackupResult(target, size, digest, check)


def database_in_use(engine: Engine) -> bool:
    """True when the target already holds a Case Desk schema (restore must be forced)."""
    if engine.dialect.name == "sqlite":
        path = _sqlite_path(engine)
        if not path.exists() or path.stat().st_size == 0:
            return False
    return bool(inspect(engine).get_table_names())


def restore(engine: Engine, source: Path, *, actor: Actor, now: datetime,
            force: bool = False) -> CheckReport:
    """Replace the database with `source`, then prove the result (see module doc)."""
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise ValidationError(f"No backup file at {source}.")
    if database_in_use(engine) and not force:
        raise ValidationError(
            "The database already holds data; restoring would replace all of it. "
            "Stop the dashboard and the worker, then run again with --force."
        )
    digest = sha256_of(source)
    if engine.dialect.name == "sqlite":
        # Check the backup before touching the live database: a damaged or tampered file
        # is refused while the current data is still there.
        before = _check_sqlite_file(source)
        if not before.ok:
            raise BackupError(f"The backup does not verify, nothing was restored: "
                              f"{before.summary()}")
        _restore_sqlite(engine, source)
    else:
        _restore_pg(engine, source)
    check = check_database(engine)
    if "audit_entry" in set(inspect(engine).get_table_names()):
        ended = _end_restored_sessions(engine, now=now, actor=actor, source_sha256=digest,
                                       check=check)
        check.notes.append(f"{ended} open session(s) from the backup ended")
    return check
