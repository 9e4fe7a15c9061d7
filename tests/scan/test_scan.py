"""The set-based scan on SQLite and PostgreSQL: raise, resolve, idempotence, the levels
derived at read time, acknowledgement and the "last scan" summary. `now` is passed in
everywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlmodel import Session

from core.db import session_scope
from core.errors import PermissionDenied, ValidationError
from core.flag_levels import Moment, current_severity
from core.models import AuditEntry, Case, CaseEvent, CaseFlag, ContactAttempt, JobRun, SlaRule
from core.scan import acknowledge_flag, run_recompute, run_scan
from core.vocab import FUNNEL
from core.workflows.clocks import (
    DEFAULT_SLA_DAYS,
    apply_deadlines,
    deadline_shortfall,
    deadlines_for_case,
    load_limits,
)
from tests.factories import actor_for, make_case, make_team, make_user

SEC = timedelta(seconds=1)


def open_flags(session: Session, case_id: int | None = None) -> dict[tuple[int, str], CaseFlag]:
    q = select(CaseFlag).where(CaseFlag.resolved_at.is_(None))
    if case_id is not None:
        q = q.where(CaseFlag.case_id == case_id)
    return {(f.case_id, f.kind): f for f in session.execute(q).scalars()}


def severity(session: Session, case_id: int, kind: str, now=None) -> str | None:  # noqa: ANN001
    """The open flag's stored severity (the level when raised), or with `now` its level
    now, derived from the case."""
    flag = open_flags(session, case_id).get((case_id, kind))
    if flag is None:
        return None
    if now is None:
        return flag.severity
    return current_severity(flag, session.get(Case, case_id), Moment.at(now)).value


def set_case(session: Session, case: Case, **fields) -> None:
    """Change a case directly (the workflow engine's job in the app) and restore its
    stored deadlines the way the engine does on every write."""
    for k, v in fields.items():
        setattr(case, k, v)
    apply_deadlines(case, deadlines_for_case(case, load_limits(session), "US"))
    session.add(case)
    session.flush()


def test_scan_raises_sla_flags_at_every_boundary_of_every_state(engine, now):
    expected = {}
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        for state in FUNNEL:
            limit = DEFAULT_SLA_DAYS[state]
            for fraction, before, at in [(0.75, None, "due_soon"), (1.0, "due_soon", "stalled"),
                                         (1.5, "stalled", "escalated")]:
                for offset, sev in [(-SEC, before), (timedelta(0), at)]:
                    days = (timedelta(days=limit * fraction) + offset).total_seconds() / 86400
                    c = make_case(session, now=now, team=team, state=state.value,
                                  days_in_state=days, biopsy_days_ago=None)
                    expected[c.id] = sev
    result = run_scan(engine, now=now)
    with session_scope(engine) as session:
        got = {cid: severity(session, cid, "sla") for cid in expected}
    assert got == expected
    assert result.raised == sum(1 for v in expected.values() if v)


def test_a_flag_level_moves_with_time_while_the_scan_writes_nothing(engine, now):
    # The level of an SLA or patient-clock flag is derived when read (core.flag_levels):
    # the scan raises the flag once and never rewrites it as time passes (issue 8).
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, state="referral", days_in_state=6,
                         biopsy_days_ago=40)  # 7-day limit: due soon from 5.25 days
    r1 = run_scan(engine, now=now)
    assert r1.raised == 2
    with session_scope(engine) as session:
        before = [f.model_dump() for f in session.execute(
            select(CaseFlag).order_by(CaseFlag.id)).scalars()]
    for days, sla, patient in [(0, "due_soon", "due_soon"), (1, "stalled", "due_soon"),
                               (5, "escalated", "stalled"), (20, "escalated", "escalated")]:
        later = now + timedelta(days=days)
        assert run_scan(engine, now=later).changed == 0
        with session_scope(engine) as session:
            assert severity(session, case.id, "sla", later) == sla
            assert severity(session, case.id, "patient_clock", later) == patient
            # ... while the stored rows keep the level they were raised with
            assert [f.model_dump() for f in session.execute(
                select(CaseFlag).order_by(CaseFlag.id)).scalars()] == before
    assert {f["severity"] for f in before} == {"due_soon"}


def test_a_raised_limit_lowers_the_level_shown_at_once(engine, now):
    with session_scope(engine) as session:
        case = make_case(session, now=now, team=make_team(session, now=now), state="referral",
                         days_in_state=8, biopsy_days_ago=None)  # 7 days: stalled
    run_scan(engine, now=now)
    with session_scope(engine) as session:
        assert severity(session, case.id, "sla", now) == "stalled"
        session.get(SlaRule, "referral").limit_days = 10  # 8 of 10 days: due soon
    run_recompute(engine, now=now)
    with session_scope(engine) as session:
        assert severity(session, case.id, "sla", now) == "due_soon"
    assert run_scan(engine, now=now).changed == 0  # still due soon: the flag stays open


def test_a_flag_whose_cause_is_gone_shows_its_raised_level_until_the_scan_resolves_it(
        engine, now):
    with session_scope(engine) as session:
        case = make_case(session, now=now, team=make_team(session, now=now), state="referral",
                         days_in_state=8, biopsy_days_ago=None)
    run_scan(engine, now=now + timedelta(days=3))  # raised at escalated
    with session_scope(engine) as session:
        set_case(session, session.get(Case, case.id), on_hold=True, hold_started_at=now,
                 hold_reason="waiting on slides")
        assert severity(session, case.id, "sla", now) == "escalated"
    assert run_scan(engine, now=now + timedelta(days=3)).resolved == 1


def test_second_scan_with_nothing_changed_changes_nothing(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        for state, days, biopsy in [("assessed", 5, 70), ("referral", 6, 46), ("seen", 1, 31)]:
            make_case(session, now=now, team=team, state=state, days_in_state=days,
                      biopsy_days_ago=biopsy,
                      planned_treatment_start=now.date() + timedelta(days=3))
    first = run_scan(engine, now=now)
    assert first.raised > 0
    with session_scope(engine) as session:
        before = [f.model_dump() for f in session.execute(
            select(CaseFlag).order_by(CaseFlag.id)).scalars()]
    second = run_scan(engine, now=now)
    # Incremental: nothing was written and the clock did not move, so no case is looked at.
    assert second.changed == 0 and second.examined == 0 and not second.full
    assert first.full and first.examined == 3
    with session_scope(engine) as session:
        after = [f.model_dump() for f in session.execute(
            select(CaseFlag).order_by(CaseFlag.id)).scalars()]
        runs = session.execute(select(JobRun).order_by(JobRun.id)).scalars().all()
    assert after == before
    assert [(r.status, r.raised) for r in runs] == [("ok", first.raised), ("ok", 0)]


def test_flag_resolves_when_the_case_moves_on_and_a_new_one_follows_if_late_again(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, state="referral", days_in_state=8,
                         biopsy_days_ago=None)
    run_scan(engine, now=now)
    with session_scope(engine) as session:
        case = session.get(Case, case.id)
        set_case(session, case, state="records_requested", state_entered_at=now)
    r = run_scan(engine, now=now)
    assert r.resolved == 1 and r.raised == 0
    later = now + timedelta(days=8)  # records_requested, 10 days: due soon at 7.5
    r = run_scan(engine, now=later)
    assert r.raised == 1
    with session_scope(engine) as session:
        flag = open_flags(session, case.id)[(case.id, "sla")]
        assert (flag.state, flag.severity) == ("records_requested", "due_soon")


@pytest.mark.parametrize("cause", ["hold", "closed", "outcome"])
def test_flags_resolve_when_hold_starts_case_closes_or_outcome_is_recorded(engine, now, cause):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, state="seen", days_in_state=20,
                         biopsy_days_ago=50, planned_treatment_start=now.date())
    first = run_scan(engine, now=now)
    assert first.raised == 3  # sla, patient clock, deadline risk
    with session_scope(engine) as session:
        case = session.get(Case, case.id)
        if cause == "hold":
            set_case(session, case, on_hold=True, hold_reason="waiting on slides",
                     hold_started_at=now)
        elif cause == "closed":
            set_case(session, case, state="closed", close_reason="completed",
                     closed_from_state="seen")
        else:
            set_case(session, case, outcome_recorded_at=now, outcome_diagnosis="confirmed")
    r = run_scan(engine, now=now)
    with session_scope(engine) as session:
        remaining = set(open_flags(session, case.id))
    # A hold pauses the SLA clock only: the patient's own clock never pauses.
    expected = set()
    if cause == "hold":
        expected = {(case.id, "patient_clock"), (case.id, "deadline_risk")}
    assert remaining == expected
    assert r.resolved == 3 - len(expected)


def test_patient_clock_flags_follow_the_thresholds(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        ids = {days: make_case(session, now=now, team=team, biopsy_days_ago=days).id
               for days in (29, 30, 45, 60)}
    run_scan(engine, now=now)
    with session_scope(engine) as session:
        got = {days: severity(session, cid, "patient_clock") for days, cid in ids.items()}
    assert got == {29: None, 30: "due_soon", 45: "stalled", 60: "escalated"}


def test_deadline_risk_flags_with_the_shortfall_and_follows_history(engine, now):
    today = now.date()
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        # records_requested needs 10 + 3 + 14 + 14 = 41 days without history
        short = make_case(session, now=now, team=team, state="records_requested",
                          biopsy_days_ago=None, planned_treatment_start=today + timedelta(35))
        fits = make_case(session, now=now, team=team, state="records_requested",
                         biopsy_days_ago=None, planned_treatment_start=today + timedelta(41))
        started = make_case(session, now=now, team=team, state="records_requested",
                            biopsy_days_ago=None, treatment_status="treatment_started",
                            planned_treatment_start=today - timedelta(3))
    run_scan(engine, now=now)
    with session_scope(engine) as session:
        flags = open_flags(session)
        assert flags[(short.id, "deadline_risk")].shortfall_days == pytest.approx(6)
        assert flags[(short.id, "deadline_risk")].severity == "stalled"
        assert (fits.id, "deadline_risk") not in flags
        assert (started.id, "deadline_risk") not in flags
        # History says every stage takes 5 days: 4 stages = 20 days, both fit now.
        for state in ("records_requested", "records_received", "scheduled", "seen"):
            for _ in range(20):
                session.add(CaseEvent(case_id=fits.id, from_state=state, to_state="closed",
                                      at=now, days_in_from_state=5.0, version=1,
                                      team_id=fits.team_id))
    # The scans read the stage medians the nightly job stores; the next scan moves every
    # state's risk cutoff and looks at the cases in between.
    run_recompute(engine, now=now)
    r = run_scan(engine, now=now)
    assert r.resolved == 1
    # A day later with the same history: still fits (20 < 34).
    assert run_scan(engine, now=now + timedelta(days=1)).changed == 0


def test_deadline_risk_flag_keeps_the_shortfall_it_was_raised_with(engine, now):
    # The shortfall grows by a day every day: storing it would rewrite every at-risk flag
    # on every day's first scan (issue 8). Today's is computed from the case.
    today = now.date()
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, state="seen", biopsy_days_ago=None,
                         planned_treatment_start=today + timedelta(10))  # needs 14
    run_scan(engine, now=now)
    r = run_scan(engine, now=now + timedelta(days=2))
    assert r.changed == 0
    with session_scope(engine) as session:
        flag = open_flags(session, case.id)[(case.id, "deadline_risk")]
        assert flag.shortfall_days == 4
        case = session.get(Case, case.id)
        assert deadline_shortfall(case.planned_treatment_start, "seen",
                                  today + timedelta(days=2), {"seen": 14.0}) == 6


def _attempt(session: Session, case_id: int, at, outcome: str) -> None:
    session.add(ContactAttempt(case_id=case_id, at=at, channel="phone", outcome=outcome))
    session.flush()


def test_unreachable_after_the_third_failed_attempt_and_cleared_by_a_success(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, biopsy_days_ago=None)
        _attempt(session, case.id, now - timedelta(hours=5), "reached")
        _attempt(session, case.id, now - timedelta(hours=4), "no_answer")
        _attempt(session, case.id, now - timedelta(hours=3), "voicemail")
    assert run_scan(engine, now=now).raised == 0  # two failures in a row
    with session_scope(engine) as session:
        _attempt(session, case.id, now - timedelta(hours=2), "no_answer")
    assert run_scan(engine, now=now).by_kind["unreachable"]["raised"] == 1
    with session_scope(engine) as session:
        assert severity(session, case.id, "unreachable") == "stalled"
        _attempt(session, case.id, now - timedelta(hours=1), "reached")
    assert run_scan(engine, now=now).by_kind["unreachable"]["resolved"] == 1
    with session_scope(engine) as session:
        assert severity(session, case.id, "unreachable") is None


def test_acknowledged_flag_stays_open_until_its_cause_is_gone(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        user = make_user(session, now=now, team=team)
        other = make_user(session, now=now, team=make_team(session, now=now))
        case = make_case(session, now=now, team=team, assignee=user, state="referral",
                         days_in_state=8, biopsy_days_ago=None)
    run_scan(engine, now=now)
    with session_scope(engine) as session:
        flag_id = open_flags(session, case.id)[(case.id, "sla")].id
        with pytest.raises(ValidationError):
            acknowledge_flag(session, flag_id=flag_id, actor=actor_for(user), note="  ", now=now)
        with pytest.raises(PermissionDenied):
            acknowledge_flag(session, flag_id=flag_id, actor=actor_for(other), note="x", now=now)
    with session_scope(engine) as session:
        flag = acknowledge_flag(session, flag_id=flag_id, actor=actor_for(user),
                                note="Insurer promised the referral by Friday", now=now)
        assert flag.acknowledged_at == now and flag.acknowledged_by_id == user.id
        audit = session.execute(select(AuditEntry).where(
            AuditEntry.action == "flag.acknowledge")).scalar_one()
        assert audit.case_id == case.id and "Insurer" not in (audit.detail or "")
    assert run_scan(engine, now=now).changed == 0
    with session_scope(engine) as session:
        assert open_flags(session, case.id)[(case.id, "sla")].ack_note.startswith("Insurer")
        set_case(session, session.get(Case, case.id), state="records_requested",
                 state_entered_at=now)
    assert run_scan(engine, now=now).resolved == 1
    with session_scope(engine) as session:
        with pytest.raises(ValidationError):
            acknowledge_flag(session, flag_id=flag_id, actor=actor_for(user), note="late",
                             now=now)


def test_failed_scan_writes_nothing_but_a_failed_job_run(engine, now, monkeypatch):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        make_case(session, now=now, team=team, state="referral", days_in_state=8)
    from core.scan import sweep

    real = sweep._sweep_kind

    def explode(session, rule, ctx, *direct):
        if rule.kind == "patient_clock":
            raise RuntimeError("disk on fire")
        return real(session, rule, ctx, *direct)

    monkeypatch.setattr(sweep, "_sweep_kind", explode)
    with pytest.raises(RuntimeError):
        run_scan(engine, now=now, worker="test")
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(CaseFlag)).scalar_one() == 0
        run = session.execute(select(JobRun)).scalar_one()
        assert run.status == "failed" and "disk on fire" in run.error
    monkeypatch.setattr(sweep, "_sweep_kind", real)
    assert run_scan(engine, now=now).raised == 1


def test_scan_skips_when_the_lease_check_says_it_is_not_the_leader(engine, now):
    with session_scope(engine) as session:
        make_case(session, now=now, team=make_team(session, now=now), state="referral",
                  days_in_state=8)
    result = run_scan(engine, now=now, still_leader=lambda s, n: False)
    assert result.skipped
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(JobRun)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(CaseFlag)).scalar_one() == 0


def test_stale_deadline_on_a_held_case_raises_nothing(engine, now):
    # Belt and braces: even a stored deadline left behind on a held case is ignored.
    with session_scope(engine) as session:
        case = make_case(session, now=now, team=make_team(session, now=now), state="referral",
                         days_in_state=8, biopsy_days_ago=None)
        session.execute(update(Case).where(Case.id == case.id).values(on_hold=True))
    assert run_scan(engine, now=now).raised == 0


def test_case_page_shows_each_flag_at_its_level_now_worst_first(engine, now):
    from core.queries.case_detail import case_detail

    with session_scope(engine) as session:
        team = make_team(session, now=now)
        user = make_user(session, now=now, team=team)
        case = make_case(session, now=now, team=team, assignee=user, state="referral",
                         days_in_state=6, biopsy_days_ago=46)
    run_scan(engine, now=now)
    for later, shown in [(now, [("patient_clock", "stalled"), ("sla", "due_soon")]),
                         (now + timedelta(days=5),  # 11 of 7 days; 51 days since biopsy
                          [("sla", "escalated"), ("patient_clock", "stalled")])]:
        with session_scope(engine) as session:
            d = case_detail(session, case_id=case.id, actor=actor_for(user), now=later)
            assert [(f.kind, level.value) for f, level in d.flags] == shown


@pytest.mark.postgres
def test_a_scan_that_raises_many_flags_refreshes_their_planner_statistics(pg_engine, now):
    # PostgreSQL planned the anti-joins of the next statements for an empty case_flag
    # (minutes at a million cases): the scan analyzes the table after a large change.
    with session_scope(pg_engine) as session:
        team = make_team(session, now=now)
        for _ in range(5):
            make_case(session, now=now, team=team, state="referral", days_in_state=8,
                      biopsy_days_ago=None)
    assert run_scan(pg_engine, now=now).raised == 5
    with pg_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT reltuples FROM pg_class "
                                    "WHERE oid = 'case_flag'::regclass").scalar_one() == 5


def test_a_full_scan_resets_the_rank_of_cases_whose_ranked_flags_are_gone(engine, now):
    """The reset of flag_rank (on PostgreSQL a set difference, see _update_flag_rank):
    a case ranked without a ranked open flag goes back to 0; one with a flag keeps the
    flag's rank; a resolved flag does not count."""
    from core.scan import sweep

    with session_scope(engine) as session:
        team = make_team(session, now=now)
        stale, flagged, resolved = (
            make_case(session, now=now, team=team, state="referral", days_in_state=2,
                      biopsy_days_ago=None) for _ in range(3))
        for case in (stale, flagged, resolved):
            case.flag_rank = 3
        session.add(CaseFlag(case_id=flagged.id, kind="unreachable", severity="stalled",
                             state="referral", raised_at=now))
        session.add(CaseFlag(case_id=resolved.id, kind="unreachable", severity="stalled",
                             state="referral", raised_at=now, resolved_at=now))
    with session_scope(engine) as session:
        sweep._update_flag_rank(session, None)
    with session_scope(engine, write=False) as session:
        ranks = dict(session.execute(select(Case.id, Case.flag_rank)).all())
    assert (ranks[stale.id], ranks[flagged.id], ranks[resolved.id]) == (0, 2, 0)


def test_a_sqlite_scan_gives_its_connection_the_usual_page_cache_back_whatever_happens(
        sqlite_engine, now, monkeypatch):
    # The scan runs with a 256 MB page cache; a skipped scan (not the leader) and a
    # failed one used to return the pooled connection with it.
    from core.db import SQLITE_CACHE_KIB
    from core.scan import sweep

    def cache_size() -> int:
        with sqlite_engine.connect() as conn:
            return conn.exec_driver_sql("PRAGMA cache_size").scalar_one()

    seen = []
    real = sweep.scan_session

    def spy(session, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(session.connection().exec_driver_sql("PRAGMA cache_size").scalar_one())
        return real(session, **kw)

    monkeypatch.setattr(sweep, "scan_session", spy)
    assert run_scan(sqlite_engine, now=now, still_leader=lambda s, n: False).skipped
    assert cache_size() == -SQLITE_CACHE_KIB
    run_scan(sqlite_engine, now=now)
    assert seen == [-sweep._SQLITE_SCAN_CACHE_KIB]
    assert cache_size() == -SQLITE_CACHE_KIB

    def explode(session, **kw):  # noqa: ANN001, ANN003, ANN202
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sweep, "scan_session", explode)
    with pytest.raises(RuntimeError):
        run_scan(sqlite_engine, now=now)
    assert cache_size() == -SQLITE_CACHE_KIB
