import time
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from core.db import session_scope
from core.models import Case, Patient, SlaRule, Team


def _team_and_patient(session, now):
    team = Team(name="Breast East", created_at=now)
    patient = Patient(mrn="MRN-1", first_name="Ana", last_name="Silva", search_name="ana silva",
                      created_at=now)
    session.add(team)
    session.add(patient)
    session.flush()
    return team, patient


def _case(team, patient, now, **overrides):
    fields = dict(patient_id=patient.id, team_id=team.id, diagnosis_category="invasive",
                  assessed_at=now, state_entered_at=now, created_at=now, updated_at=now)
    fields.update(overrides)
    return Case(**fields)


def test_default_sla_rules_are_seeded(engine):
    with session_scope(engine, write=False) as session:
        rules = {r.state: r.limit_days for r in session.exec(select(SlaRule))}
    assert rules == {"assessed": 2, "referral": 7, "records_requested": 10,
                     "records_received": 3, "scheduled": 14, "seen": 14}


def test_datetimes_round_trip_as_aware_utc(engine, now):
    with session_scope(engine) as session:
        team, patient = _team_and_patient(session, now)
        session.add(_case(team, patient, now, biopsy_date=date(2026, 11, 1)))
    with session_scope(engine, write=False) as session:
        case = session.exec(select(Case)).one()
    assert case.assessed_at == now
    assert case.assessed_at.tzinfo is not None


def test_check_constraint_refuses_unknown_state(engine, now):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            team, patient = _team_and_patient(session, now)
            session.add(_case(team, patient, now, state="stalled"))
    with session_scope(engine, write=False) as session:
        assert session.exec(select(Team)).all() == []  # nothing half-written


def test_closed_case_needs_a_reason(engine, now):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            team, patient = _team_and_patient(session, now)
            session.add(_case(team, patient, now, state="closed"))


def test_foreign_keys_are_enforced(engine, now):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(_case(Team(id=999, name="x", created_at=now),
                              Patient(id=998, mrn="x", first_name="x", last_name="x",
                                      search_name="x", created_at=now), now))


def test_triage_index_exists(engine):
    names = {ix["name"] for ix in inspect(engine).get_indexes("cases")}
    assert "ix_cases_triage" in names


def test_sqlite_runs_in_wal_with_foreign_keys(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_naive_datetimes_are_refused(sqlite_engine):
    with pytest.raises(Exception, match="timezone"):
        with session_scope(sqlite_engine) as session:
            session.add(Team(name="t", created_at=datetime(2026, 1, 1)))
            session.flush()


def test_aware_datetime_fixture_is_utc(now):
    assert now.tzinfo is UTC


def test_a_write_that_cannot_get_the_sqlite_lock_fails_as_sqlalchemys_error(tmp_path,
                                                                           monkeypatch):
    """BEGIN IMMEDIATE runs on the driver's cursor (core.db's begin hook); a lock held
    past the busy timeout must still surface as SQLAlchemy's OperationalError, which the
    CLI and the workers catch."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from core import db

    path = tmp_path / "locked.db"
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = db.create_db_engine(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            with session_scope(engine) as session:
                session.connection()
    finally:
        holder.close()
        engine.dispose()


def test_a_new_sqlite_database_and_its_wal_are_readable_by_the_owner_only(tmp_path):
    import os
    import stat

    from sqlalchemy import text

    from core.db import create_db_engine

    old = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        path = tmp_path / "sub" / "casedesk.db"
        engine = create_db_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        engine.dispose()
    finally:
        os.umask(old)
    assert modes["casedesk.db"] == 0o600
    assert modes.get("casedesk.db-wal", 0o600) == 0o600
    assert set(modes) >= {"casedesk.db", "casedesk.db-wal"}


def test_an_existing_sqlite_file_keeps_the_permissions_the_operator_gave_it(tmp_path):
    import stat

    from core.db import create_db_engine

    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    create_db_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.postgres
def test_plain_reads_on_postgresql_run_each_statement_on_its_own(pg_engine):
    """plain_reads: no BEGIN/COMMIT around a page's reads - each statement is its own
    transaction (now() moves between them); a normal read session is one transaction."""
    def two_nows(**kw) -> tuple:  # noqa: ANN003
        with session_scope(pg_engine, write=False, **kw) as s:
            first = s.connection().exec_driver_sql("SELECT now()").scalar_one()
            time.sleep(0.01)
            return first, s.connection().exec_driver_sql("SELECT now()").scalar_one()

    one, two = two_nows(plain_reads=True)
    assert two > one
    one, two = two_nows()
    assert two == one
    # the pool's connections are back in transactions afterwards
    with session_scope(pg_engine) as s:
        assert s.connection().exec_driver_sql("SHOW transaction_isolation").scalar_one() \
            == "read committed"
        first = s.connection().exec_driver_sql("SELECT now()").scalar_one()
        time.sleep(0.01)
        assert s.connection().exec_driver_sql("SELECT now()").scalar_one() == first


def test_plain_reads_are_an_ordinary_read_transaction_on_sqlite(sqlite_engine):
    with session_scope(sqlite_engine, write=False, plain_reads=True) as s:
        assert s.connection().exec_driver_sql("SELECT 1").scalar_one() == 1
        assert s.connection().connection.driver_connection.in_transaction


@pytest.mark.postgres
def test_postgresql_sessions_run_in_utc_and_keep_the_urls_own_options(pg_cluster):
    """Whatever zone the server or the URL names, the app's sessions are in UTC (times
    come back in datetime.UTC), and the URL's other options still apply."""
    from urllib.parse import quote

    from core.db import create_db_engine

    cluster, _ = pg_cluster
    options = quote("-c statement_timeout=4321 -c TimeZone=Asia/Tokyo")
    eng = create_db_engine(f"{cluster.url('postgres')}?options={options}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "4321ms"
            assert conn.exec_driver_sql("SELECT now()").scalar_one().tzinfo is UTC
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_postgresql_sessions_keep_the_options_of_pgoptions(pg_cluster, monkeypatch):
    """libpq ignores PGOPTIONS once the connection names `options` (the UTC zone): the
    operator's variable is passed on with it."""
    from core.db import create_db_engine

    cluster, _ = pg_cluster
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=4321")
    eng = create_db_engine(cluster.url("postgres"))
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "4321ms"
            assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
    finally:
        eng.dispose()
