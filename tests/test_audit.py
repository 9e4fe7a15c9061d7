from sqlalchemy import text

from core import audit
from core.actor import Actor
from core.db import session_scope
from core.vocab import Role

ACTOR = Actor(user_id=7, username="nina", role=Role.COORDINATOR, team_id=1, session_id="abcd")


def _write(engine, now, n=3):
    with session_scope(engine) as session:
        for i in range(n):
            audit.record(session, actor=ACTOR, action="case.view", case_id=i + 1, now=now)


def test_chain_verifies_when_untouched(engine, now):
    _write(engine, now)
    with session_scope(engine, write=False) as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 3


# Direct UPDATE/DELETE/TRUNCATE refusals: tests/security/test_audit_verify.py.


def test_forced_change_is_detected_and_named(sqlite_engine, now):
    _write(sqlite_engine, now)
    with sqlite_engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_entry_no_update"))
        conn.execute(text("UPDATE audit_entry SET case_id = 99 WHERE id = 2"))
    with session_scope(sqlite_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == 2


def test_forced_delete_is_detected_at_the_next_row(pg_engine, now):
    _write(pg_engine, now)
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"))
        conn.execute(text("DELETE FROM audit_entry WHERE id = 2"))
    with session_scope(pg_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == 3
