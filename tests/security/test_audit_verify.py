"""`casedesk audit verify` on both databases: an untouched chain passes; a change forced
past the append-only triggers is named by row; a cut tail is caught with an anchor."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from core import audit
from core.actor import Actor
from core.cli.audit import CHAIN_BROKEN_EXIT
from core.db import session_scope
from core.vocab import Role

ACTOR = Actor(user_id=7, username="nina", role=Role.COORDINATOR, team_id=1, session_id="abcd")


def _write(engine, now, n=5):
    with session_scope(engine) as session:
        for i in range(n):
            audit.record(session, actor=ACTOR, action="case.view", case_id=i + 1, now=now)


def _force(engine, statement: str) -> None:
    """Tamper the way someone with database access would: switch the trigger off first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entry_no_update"))
            conn.execute(text("DROP TRIGGER audit_entry_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"))
        conn.execute(text(statement))


def test_verify_reports_rows_checked_on_an_untouched_chain(engine, now, cli):
    _write(engine, now)
    result = cli(engine, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "Audit chain OK: 5 rows checked" in result.output


def test_verify_passes_on_an_empty_log(engine, cli):
    result = cli(engine, "audit", "verify")
    assert result.exit_code == 0 and "0 rows checked" in result.output


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entry SET outcome = 'denied' WHERE id = 3",
    "DELETE FROM audit_entry WHERE id = 3",
])
def test_direct_changes_to_audit_rows_are_refused(engine, now, statement):
    _write(engine, now)
    with pytest.raises(DatabaseError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text(statement))


def test_truncating_the_audit_log_is_refused_on_postgresql(pg_engine, now):
    # SQLite has no TRUNCATE (its DELETE trigger covers the same ground), so this one
    # runs on PostgreSQL only rather than being skipped on SQLite.
    _write(pg_engine, now)
    with pytest.raises(DatabaseError, match="append-only"):
        with pg_engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_entry"))


@pytest.mark.parametrize(("statement", "bad_row"), [
    ("UPDATE audit_entry SET case_id = 99 WHERE id = 3", 3),
    ("UPDATE audit_entry SET detail = '{}' WHERE id = 1", 1),
    # Altering only the stored hash is caught as well.
    ("UPDATE audit_entry SET row_hash = CASE WHEN substr(row_hash, 1, 1) = 'a' THEN 'b' "
     "ELSE 'a' END || substr(row_hash, 2) WHERE id = 2", 2),
    ("DELETE FROM audit_entry WHERE id = 3", 4),
    ("DELETE FROM audit_entry WHERE id = 1", 2),
])
def test_forced_change_is_named_by_verify(engine, now, cli, statement, bad_row):
    _write(engine, now)
    _force(engine, statement)
    result = cli(engine, "audit", "verify")
    assert result.exit_code == CHAIN_BROKEN_EXIT
    assert f"BROKEN at row {bad_row}" in result.output


def test_rehashing_an_altered_row_breaks_the_chain_at_the_next_row(engine, now, cli):
    _write(engine, now)
    with session_scope(engine, write=False) as session:
        entry = session.get(audit.AuditEntry, 2)
    entry.case_id = 42
    entry.row_hash = audit._digest(entry)
    _force(engine, f"UPDATE audit_entry SET case_id = 42, row_hash = '{entry.row_hash}' "
                   "WHERE id = 2")
    result = cli(engine, "audit", "verify")
    assert result.exit_code == CHAIN_BROKEN_EXIT
    assert "BROKEN at row 3" in result.output


def test_cut_tail_is_detected_with_an_anchor(engine, now, cli):
    _write(engine, now)
    first = cli(engine, "audit", "verify")
    anchor = first.output.split("Anchor ")[1].split(" ")[0]
    assert anchor.startswith("5:")
    _force(engine, "DELETE FROM audit_entry WHERE id >= 4")
    # Without the anchor what is left is a valid chain ...
    assert cli(engine, "audit", "verify").exit_code == 0
    # ... with it the removal is named.
    result = cli(engine, "audit", "verify", "--anchor", anchor)
    assert result.exit_code == CHAIN_BROKEN_EXIT
    assert "row 5" in result.output


def test_a_malformed_anchor_is_a_clear_error(sqlite_engine, cli):
    result = cli(sqlite_engine, "audit", "verify", "--anchor", "five")
    assert result.exit_code == 1 and "ID:HASH" in result.output
