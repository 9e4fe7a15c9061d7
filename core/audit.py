"""Append-only, hash-chained audit log (DESIGN.md section 7).

Each row stores the hash of the row before it and its own hash over its content, so a
row altered or removed behind the application's back breaks the chain at that point
(`verify_chain`). The database also refuses UPDATE and DELETE on the table (triggers in
migration 0002). Rows carry case ids, never names.

Writers are serialised so the chain stays linear: SQLite write transactions already hold
the database lock (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped advisory lock
is taken before the last hash is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import URL, Connection, Engine, bindparam, func, insert, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from core import driver_sql
from core.actor import Actor
from core.models import DETAIL_MAX, AuditEntry
from core.timeutil import as_utc
from core.vocab import AuditOutcome

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 4_242_001  # advisory lock key for the audit chain


def _digest(entry: AuditEntry) -> str:
    return _digest_of(entry.prev_hash, entry.at, entry.user_id, entry.role, entry.session_id,
                      entry.action, entry.case_id, entry.outcome, entry.detail)


def _digest_of(
    prev_hash: str, at: datetime, user_id: int | None, role: str | None,
    session_id: str | None, action: str, case_id: int | None, outcome: str,
    detail: str | None,
) -> str:
    payload = json.dumps(
        [
            prev_hash,
            as_utc(at).isoformat(timespec="microseconds"),
            user_id,
            role,
            session_id,
            action,
            case_id,
            outcome,
            detail,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# Core statements, built once: every change of a case writes a row (issue 8 measured the
# ORM's unit of work at about a millisecond per row).
_TABLE = AuditEntry.__table__
_COLUMNS = ("at", "user_id", "role", "session_id", "action", "case_id", "outcome", "detail",
            "prev_hash", "row_hash")
_LAST_HASH = sa_select(_TABLE.c.row_hash).order_by(_TABLE.c.id.desc()).limit(1)
_INSERT = insert(_TABLE)
# The row, only if the chain still ends where we think it does: checking the last hash in
# the INSERT itself saves the statement that reads it (SQLite, see record()).
_INSERT_IF_LAST = insert(_TABLE).from_select(
    _COLUMNS,
    sa_select(*(bindparam(c, type_=_TABLE.c[c].type) for c in _COLUMNS)).where(
        func.coalesce(_LAST_HASH.scalar_subquery(), GENESIS) == bindparam("b_prev")),
)
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
# Per database: the hash of the last row this process wrote, the usual prev_hash of the
# next one. Only a guess - _INSERT_IF_LAST checks it - so a row written meanwhile by
# another process, or one of ours rolled back, costs a re-read and nothing else.
_last_written: dict[URL, str] = {}


def _last_hash(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_LOCK, {"k": _PG_AUDIT_LOCK})
    return conn.execute(_LAST_HASH).scalar() or GENESIS


def detail_json(detail: dict[str, Any]) -> str:
    """The detail as JSON of at most DETAIL_MAX characters, always valid JSON: a detail
    too long (a pasted reason; control characters take six characters each once escaped)
    is kept as the start of its JSON text under "truncated", cut so that the escaped
    whole fits. Cutting the JSON text itself would leave a row no reader can parse, in a
    log that is never edited."""
    text = json.dumps(detail, default=str, ensure_ascii=False, sort_keys=True)
    if len(text) <= DETAIL_MAX:
        return text

    def wrapped(n: int) -> str:
        return json.dumps({"truncated": text[:n] + "…"}, ensure_ascii=False)

    low, high = 0, len(text)  # the longest prefix whose wrapping fits
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(wrapped(mid)) <= DETAIL_MAX else (low, mid - 1)
    return wrapped(low)


def record(
    session: Session,
    *,
    actor: Actor | None,
    action: str,
    now: datetime,
    case_id: int | None = None,
    outcome: AuditOutcome | str = AuditOutcome.OK,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit row inside the caller's transaction (it commits or rolls back
    together with the change it describes)."""
    detail_text = detail_json(detail) if detail else None
    conn = session.connection()
    row = {
        "at": as_utc(now),
        "user_id": actor.user_id if actor else None,
        "role": actor.role.value if actor else None,
        "session_id": actor.session_id if actor else None,
        "action": action,
        "case_id": case_id,
        "outcome": AuditOutcome(outcome).value,
        "detail": detail_text,
    }
    # The inserts run on the driver's cursor (core.driver_sql): every change of a case
    # writes one, and SQLAlchemy's cost per execution was as much as SQLite's own work.
    if conn.dialect.name != "sqlite":
        # under the advisory lock
        driver_sql.execute(conn, _INSERT, _chained(row, _last_hash(conn)))
        return
    # SQLite: the write transaction holds the database lock, so the chain's end cannot
    # move between the check and the insert.
    database = conn.engine.url
    guess = _last_written.get(database)
    chained = None
    if guess is not None:
        chained = _chained(row, guess)
        if driver_sql.execute(conn, _INSERT_IF_LAST, {**chained, "b_prev": guess}) \
                .rowcount != 1:
            chained = None  # another writer (or a rollback) moved the chain's end
    if chained is None:
        chained = _chained(row, _last_hash(conn))
        driver_sql.execute(conn, _INSERT, chained)
    _last_written[database] = chained["row_hash"]


def _chained(row: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    """The row linked after `prev_hash`: with it and its own hash."""
    linked = {**row, "prev_hash": prev_hash}
    linked["row_hash"] = _digest_of(**linked)
    return linked


def record_now(engine: Engine, **kwargs: Any) -> None:
    """Audit in a transaction of its own: for denials and failed sign-ins, which must be
    kept even though the action they describe is rolled back."""
    from core.db import session_scope

    with session_scope(engine) as session:
        record(session, **kwargs)


@dataclass
class ChainReport:
    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Walk the chain in id order; name the first row altered or removed."""
    prev = GENESIS
    count = 0
    last_id = 0
    while True:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            return ChainReport(ok=True, rows=count)
        for entry in rows:
            if entry.prev_hash != prev:
                return ChainReport(False, count, entry.id,
                                   f"row {entry.id}: the row before it was altered or removed")
            if _digest(entry) != entry.row_hash:
                return ChainReport(False, count, entry.id, f"row {entry.id} was altered")
            prev = entry.row_hash
            count += 1
            last_id = entry.id
