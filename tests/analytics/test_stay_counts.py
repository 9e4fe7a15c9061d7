"""stage_stay_count, kept by triggers on case_event (migration 0012), always equals the
history it counts - after inserts, updates of the counted columns and deletes, with stays
on bucket bounds and below zero - and the percentiles read through it equal numpy's, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import delete, select, update

from core.analytics.stay_percentiles import stay_percentiles
from core.db import session_scope
from core.models import CaseEvent, StageStayCount
from tests.factories import make_case, make_team

# bucket bounds (multiples of 1/8), just either side of them, a tenth (not exact in
# binary), zero and below zero (a clock set back), and stays of unknown length (None)
DAYS = [0.0, 0.125, 0.1249, 0.1251, 0.1, 0.3, 2.0, 2.5, 7.25, 7.2499, -0.125, -0.1, -2.0,
        45.0, None]


def _counts(session) -> Counter:  # noqa: ANN001
    got = Counter()
    for row in session.exec(select(StageStayCount)).scalars():
        if row.stays:
            got[(row.team_id, row.state, row.bucket)] += row.stays
    return got


def _recount(session) -> Counter:  # noqa: ANN001
    """What the counts must be, computed here from the history itself."""
    want = Counter()
    for e in session.exec(select(CaseEvent)).scalars():
        if e.from_state is not None and e.days_in_from_state is not None:
            want[(e.team_id, e.from_state, math.floor(e.days_in_from_state * 8))] += 1
    return want


def test_the_counts_follow_every_change_to_the_history(engine, now):
    with session_scope(engine) as s:
        teams = [make_team(s, now=now, name=f"T{i}") for i in range(2)]
        cases = [make_case(s, now=now, team=t, days_in_state=3) for t in teams]
        for i, days in enumerate(DAYS):
            case = cases[i % 2]
            s.add(CaseEvent(case_id=case.id, team_id=case.team_id,
                            from_state=("referral", "scheduled")[i % 2], to_state="closed",
                            at=now - timedelta(hours=i), days_in_from_state=days,
                            version=10 + i))
        s.add(CaseEvent(case_id=cases[0].id, team_id=cases[0].team_id, from_state=None,
                        to_state="assessed", at=now, days_in_from_state=None, version=99))
    with session_scope(engine) as s:
        assert _counts(s) == _recount(s)
        assert sum(_counts(s).values()) == len([d for d in DAYS if d is not None])
        ids = sorted(s.exec(select(CaseEvent.id).where(
            CaseEvent.days_in_from_state.is_not(None))).scalars())
        # every counted column changes, and a stay loses and gains its length
        s.exec(update(CaseEvent).where(CaseEvent.id == ids[0]).values(days_in_from_state=9.5))
        s.exec(update(CaseEvent).where(CaseEvent.id == ids[1]).values(
            team_id=teams[0].id, from_state="seen"))
        s.exec(update(CaseEvent).where(CaseEvent.id == ids[2]).values(days_in_from_state=None))
        s.exec(update(CaseEvent).where(CaseEvent.days_in_from_state.is_(None),
                                       CaseEvent.from_state.is_not(None))
               .values(days_in_from_state=0.5))
        s.exec(delete(CaseEvent).where(CaseEvent.id.in_(ids[3:6])))
    with session_scope(engine) as s:
        assert _counts(s) == _recount(s)


def test_percentiles_through_the_counts_equal_numpy_with_stays_on_every_bound(engine, now):
    values = [d for d in DAYS if d is not None] * 3 + [0.125 * k for k in range(-4, 40)]
    with session_scope(engine) as s:
        team = make_team(s, now=now)
        case = make_case(s, now=now, team=team, days_in_state=3)
        for i, days in enumerate(values):
            s.add(CaseEvent(case_id=case.id, team_id=team.id, from_state="referral",
                            to_state="records_requested", at=now, days_in_from_state=days,
                            version=10 + i))
        team_id = team.id
    fractions = (0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0)
    with session_scope(engine, write=False) as s:
        for scope in (team_id, None):
            got = stay_percentiles(s, team_id=scope, states=["referral", "seen"],
                                   fractions=fractions)
            assert list(got) == ["referral"]
            assert got["referral"].n == len(values)
            assert list(got["referral"].values) == pytest.approx(
                [float(np.percentile(values, p * 100)) for p in fractions], abs=1e-12)


@pytest.mark.postgres
def test_two_moves_and_the_audit_lock_cannot_deadlock_on_a_count_row(pg_engine, now):
    """A move's count row is locked at COMMIT, after the audit chain's advisory lock that
    every audited write takes. Locked at the INSERT, this interleaving deadlocked: the
    first move holds the count row and waits for the advisory lock, which the second holds
    while it waits for the count row."""
    from core.audit import _PG_AUDIT_LOCK

    with session_scope(pg_engine) as s:
        team = make_team(s, now=now)
        case = make_case(s, now=now, team=team, days_in_state=3)
        case_id, team_id = case.id, team.id
    insert = ("INSERT INTO case_event (case_id, team_id, from_state, to_state, at, "
              "days_in_from_state, version) VALUES (%s, %s, 'referral', 'records_requested', "
              "now(), 1.0, %s)")
    first, second = pg_engine.raw_connection(), pg_engine.raw_connection()
    errors: list[BaseException] = []

    def second_move() -> None:
        try:
            cur = second.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_AUDIT_LOCK,))
            cur.execute(insert, (case_id, team_id, 21))
            second.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            second.rollback()

    try:
        cur = first.cursor()
        cur.execute(insert, (case_id, team_id, 20))
        thread = threading.Thread(target=second_move)
        thread.start()
        time.sleep(0.5)  # the second move holds the advisory lock and has inserted
        try:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_AUDIT_LOCK,))
            first.commit()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            first.rollback()
        thread.join(timeout=30)
    finally:
        first.close()
        second.close()
    assert not errors, errors
    with session_scope(pg_engine, write=False) as s:
        assert _counts(s) == _recount(s)
        assert _counts(s)[(team_id, "referral", 8)] == 2


def test_a_bulk_recount_in_sql_gives_what_the_triggers_keep(engine, now):
    # benchmarks/replicate.recount_stays (after a copy with triggers off) buckets with
    # core's bucket_sql; the triggers with migration 0012's frozen copy: they must agree,
    # bucket bounds and negative stays included.
    from benchmarks.replicate import recount_stays

    with session_scope(engine) as s:
        team = make_team(s, now=now)
        case = make_case(s, now=now, team=team, days_in_state=3)
        for i, days in enumerate(DAYS):
            s.add(CaseEvent(case_id=case.id, team_id=team.id, from_state="referral",
                            to_state="closed", at=now - timedelta(hours=i),
                            days_in_from_state=days, version=10 + i))
    with session_scope(engine) as s:
        kept = _counts(s)
        for sql in recount_stays(engine.dialect.name):
            s.connection().exec_driver_sql(sql)
        assert _counts(s) == kept == _recount(s)
