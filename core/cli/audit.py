"""`casedesk audit verify`: walk the hash chain of the audit log and say where it breaks.

Exit status 0 when every row verifies, 3 when the chain is broken (so a cron job or a
monitoring probe can tell "tampered" apart from "could not run", which exits 1 or 2).

A hash chain cannot by itself show that the *newest* rows were cut off (what remains is a
valid chain). So `verify` prints an anchor - the last row's id and hash - and accepts a
previously printed anchor with `--anchor`: keep the anchor outside the database (a
ticket, the monitoring system) and a truncated tail is detected too.
"""

from __future__ import annotations

from dataclasses import dataclass

import typer
from sqlalchemy import Engine
from sqlmodel import select

from core.cli.common import engine, fail, friendly_errors
from core.errors import ValidationError

CHAIN_BROKEN_EXIT = 3
ANCHOR_MIN_HASH = 12  # hex characters of the hash an anchor must carry

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    message: str
    anchor: str | None = None  # "id:hash-prefix" of the newest row


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def parse_anchor(value: str) -> tuple[int, str]:
    try:
        raw_id, raw_hash = value.split(":", 1)
        row_id = int(raw_id)
    except ValueError:
        raise ValidationError("--anchor must look like ID:HASH, as printed by a verify.") from None
    raw_hash = raw_hash.strip().lower()
    if len(raw_hash) < ANCHOR_MIN_HASH or any(c not in "0123456789abcdef" for c in raw_hash):
        raise ValidationError(f"--anchor hash must be at least {ANCHOR_MIN_HASH} hex characters.")
    return row_id, raw_hash


def verify_database(eng: Engine, *, anchor: str | None = None) -> VerifyResult:
    from core.audit import verify_chain
    from core.db import session_scope
    from core.models import AuditEntry

    expected = parse_anchor(anchor) if anchor else None
    # One read transaction: on SQLite (WAL) it never waits behind writers, and the walk
    # sees one snapshot, so rows appended meanwhile cannot look like a break.
    with session_scope(eng, write=False) as session:
        report = verify_chain(session)
        if not report.ok:
            return VerifyResult(
                False, report.rows,
                f"Audit chain BROKEN at row {report.first_bad_id}: {report.problem}. "
                f"{_rows(report.rows)} verified before it.",
            )
        last = session.exec(
            select(AuditEntry.id, AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)
        ).first()
        if expected:
            row_id, prefix = expected
            stored = session.exec(
                select(AuditEntry.row_hash).where(AuditEntry.id == row_id)
            ).first()
            if stored is None:
                return VerifyResult(
                    False, report.rows,
                    f"Audit chain BROKEN at row {row_id}: the anchored row is gone "
                    "(the newest rows were removed).",
                )
            if not stored.startswith(prefix):
                return VerifyResult(
                    False, report.rows,
                    f"Audit chain BROKEN at row {row_id}: its hash no longer matches the anchor.",
                )
    anchor_text = f"{last[0]}:{last[1][:16]}" if last else None
    tail = f" Anchor {anchor_text} (keep it elsewhere; pass it to --anchor later)." if last else ""
    return VerifyResult(True, report.rows, f"Audit chain OK: {_rows(report.rows)} checked.{tail}",
                        anchor_text)


@audit_app.command("verify")
@friendly_errors
def verify(
    anchor: str = typer.Option(
        None, "--anchor", help="ID:HASH printed by an earlier verify; also detects a cut tail."
    ),
) -> None:
    """Check every audit row against the hash chain; name the first altered or removed row."""
    result = verify_database(engine(), anchor=anchor)
    if not result.ok:
        fail(result.message, code=CHAIN_BROKEN_EXIT)
    typer.echo(result.message)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
