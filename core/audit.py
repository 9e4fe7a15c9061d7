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

from sqlalchemy import Engine, text
from sqlmodel import Session, select

from core.actor import Actor
from core.models import DETAIL_MAX, AuditEntry
from core.timeutil import as_utc
from core.vocab import AuditOutcome

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 4_242_001  # advisory lock key for the audit chain


def _digest(entry: AuditEntry) -> str:
    payload = json.dumps(
        [
            entry.prev_hash,
            as_utc(entry.at).isoformat(timespec="microseconds"),
            entry.user_id,
            entry.role,
            entry.session_id,
            entry.action,
            entry.case_id,
            entry.outcome,
            entry.detail,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _last_hash(session: Session) -> str:
    if session.get_bind().dialect.name == "postgresql":
        session.exec(text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=_PG_AUDIT_LOCK))
    row = session.exec(select(AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    return row or GENESIS


def record(
    session: Session,
    *,
    actor: Actor | None,
    action: str,
    now: datetime,
    case_id: int | None = None,
    outcome: AuditOutcome | str = AuditOutcome.OK,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit row inside the caller's transaction (it commits or rolls back
    together with the change it describes)."""
    detail_text = None
    if detail:
        detail_text = json.dumps(detail, default=str, ensure_ascii=False, sort_keys=True)
        if len(detail_text) > DETAIL_MAX:
            detail_text = detail_text[: DETAIL_MAX - 1] + "…"
    entry = AuditEntry(
        at=as_utc(now),
        user_id=actor.user_id if actor else None,
        role=actor.role.value if actor else None,
        session_id=actor.session_id if actor else None,
        action=action,
        case_id=case_id,
        outcome=AuditOutcome(outcome).value,
        detail=detail_text,
        prev_hash=_last_hash(session),
        row_hash="",
    )
    entry.row_hash = _digest(entry)
    session.add(entry)
    session.flush()
    return entry


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
