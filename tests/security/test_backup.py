"""`casedesk backup` / `casedesk restore` on both databases: the copy is consistent and
private, a restore never overwrites silently, and what comes back proves itself."""

from __future__ import annotations

import os
import secrets
import stat

import pytest
from sqlalchemy import func, select, text

from core import audit
from core.actor import Actor
from core.backup import check_database
from core.cli.backup import VERIFY_FAILED_EXIT
from core.db import create_db_engine, session_scope
from core.models import AuditEntry, Case, UserSession
from tests.factories import make_case, make_team, make_user

SYSTEM = Actor.system("test")


def _seed(engine, now, cases=3):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        user = make_user(session, now=now, team=team)
        for _ in range(cases):
            case = make_case(session, now=now, team=team, assignee=user)
            audit.record(session, actor=SYSTEM, action="case.create", case_id=case.id, now=now)
        session.add(UserSession(id=secrets.token_hex(32), user_id=user.id, created_at=now,
                                last_seen_at=now))


def _count(engine, model):
    with session_scope(engine, write=False) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_backup_then_restore_brings_back_the_data_and_verifies(engine, now, cli, tmp_path):
    _seed(engine, now)
    file = tmp_path / "casedesk.backup"
    result = cli(engine, "backup", str(file))
    assert result.exit_code == 0, result.output
    assert "Backup written" in result.output and file.exists()
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600  # it holds PHI
    _seed(engine, now, cases=2)  # work done after the backup
    assert _count(engine, Case) == 5

    refused = cli(engine, "restore", str(file))
    assert refused.exit_code == 1 and "--force" in refused.output
    assert _count(engine, Case) == 5  # nothing was touched

    restored = cli(engine, "restore", str(file), "--force")
    assert restored.exit_code == 0, restored.output
    assert "audit chain OK" in restored.output and "3 cases" in restored.output
    assert _count(engine, Case) == 3
    report = check_database(engine)
    assert report.ok
    with session_scope(engine, write=False) as session:
        actions = session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars()
        actions = list(actions)
        open_sessions = session.execute(
            select(func.count()).select_from(UserSession).where(UserSession.ended_at.is_(None))
        ).scalar_one()
    # The restore itself is audited on the restored chain; the backup it came from was
    # audited in the database it was taken from (after the copy, so not in it).
    assert actions[-1] == "backup.restore" and "backup.create" not in actions
    assert open_sessions == 0  # a token from before the backup cannot come back to life


def test_backup_refuses_to_overwrite_an_existing_file(engine, cli, tmp_path):
    file = tmp_path / "old.backup"
    file.write_bytes(b"precious")
    result = cli(engine, "backup", str(file))
    assert result.exit_code == 1 and "--force" in result.output
    assert file.read_bytes() == b"precious"
    assert cli(engine, "backup", str(file), "--force").exit_code == 0


def test_backup_is_audited_with_the_file_hash(engine, now, cli, tmp_path):
    file = tmp_path / "b.backup"
    result = cli(engine, "backup", str(file))
    digest = result.output.split("sha256 ")[1].split(")")[0]
    with session_scope(engine, write=False) as session:
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "backup.create")
        ).scalar_one()
    assert digest in entry.detail and "b.backup" in entry.detail


def test_restore_into_an_empty_sqlite_database_needs_no_force(sqlite_engine, now, cli,
                                                              tmp_path):
    _seed(sqlite_engine, now)
    file = tmp_path / "b.backup"
    assert cli(sqlite_engine, "backup", str(file)).exit_code == 0
    fresh = create_db_engine(f"sqlite:///{tmp_path / 'new' / 'fresh.db'}")
    result = cli(fresh, "restore", str(file))
    assert result.exit_code == 0, result.output
    assert _count(fresh, Case) == 3
    fresh.dispose()


def test_a_tampered_sqlite_backup_is_refused_before_the_live_database_is_touched(
        sqlite_engine, now, cli, tmp_path):
    _seed(sqlite_engine, now)
    file = tmp_path / "b.backup"
    assert cli(sqlite_engine, "backup", str(file)).exit_code == 0
    copy = create_db_engine(f"sqlite:///{file}")
    with copy.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_entry_no_update"))
        conn.execute(text("UPDATE audit_entry SET case_id = 999 WHERE id = 2"))
    copy.dispose()
    _seed(sqlite_engine, now, cases=1)
    result = cli(sqlite_engine, "restore", str(file), "--force")
    assert result.exit_code == 1 and "does not verify" in result.output
    assert "row 2" in result.output
    assert _count(sqlite_engine, Case) == 4  # the live data is still there


def test_restore_refuses_a_file_that_is_not_a_backup(engine, cli, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    result = cli(engine, "restore", str(junk), "--force")
    assert result.exit_code == 1 and "not a" in result.output


@pytest.mark.postgres
def test_a_pg_restore_that_does_not_verify_says_so(pg_engine, now, cli, tmp_path):
    _seed(pg_engine, now)
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"))
        conn.execute(text("DELETE FROM audit_entry WHERE id = 2"))
    file = tmp_path / "b.backup"
    assert cli(pg_engine, "backup", str(file)).exit_code == 0
    result = cli(pg_engine, "restore", str(file), "--force")
    assert result.exit_code == VERIFY_FAILED_EXIT
    assert "does NOT verify" in result.output and "row 3" in result.output
