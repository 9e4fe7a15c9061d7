"""The triage read model on SQLite and PostgreSQL: order, why, filters, search, paging."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from core.db import session_scope
from core.models import AuditEntry, CaseFlag
from core.queries.triage import Assignee, TriageFilters, headline, like_pattern, queue
from core.vocab import FlagSeverity, Role
from tests.factories import (
    actor_for,
    make_case,
    make_patient,
    make_record,
    make_team,
    make_user,
)


def _setup(session, now):  # noqa: ANN001, ANN202
    team = make_team(session, now=now)
    other = make_team(session, now=now)
    me = make_user(session, now=now, team=team)
    return team, other, me


def test_queue_puts_the_worst_flag_first_then_the_furthest_past_the_limit(engine, now):
    with session_scope(engine) as s:
        team, other, me = _setup(s, now)
        calm = make_case(s, now=now, team=team, assignee=me, state="referral", days_in_state=1)
        late = make_case(s, now=now, team=team, assignee=me, state="records_requested",
                         days_in_state=12)
        make_record(s, case=late, now=now, status="requested",
                    requested_at=now - timedelta(days=12))
        # 10 days against a limit of 7: past it by 3 days (the records case by 2).
        later = make_case(s, now=now, team=team, assignee=me, state="referral",
                          days_in_state=10)
        flagged = make_case(s, now=now, team=team, assignee=me, state="referral",
                            days_in_state=2)
        s.add(CaseFlag(case_id=flagged.id, kind="patient_clock", severity="escalated",
                       state="referral", raised_at=now))
        flagged.flag_rank = 3  # as the scan keeps it (the queue reads the stored rank)
        make_case(s, now=now, team=other, state="referral", days_in_state=30)  # not mine
        actor = actor_for(me)
    with session_scope(engine, write=False) as s:
        page = queue(s, actor=actor, now=now, filters=TriageFilters(assignee=Assignee.ME))
    assert [r.case_id for r in page.rows] == [flagged.id, later.id, late.id, calm.id]
    why = {r.case_id: r.why for r in page.rows}
    assert why[late.id] == ("Records requested 12 days, limit 10 - glass slides from "
                            "Valley Pathology not received")
    nxt = {r.case_id: r.next_action for r in page.rows}
    assert nxt[late.id] == "Chase Valley Pathology for the glass slides"
    assert nxt[calm.id] == "Choose a specialist"


def test_rank_is_the_stored_flag_rank_or_a_deadline_passed_since_the_scan(engine, now):
    """The queue reads the worst open flag the scan stored (cases.flag_rank), and still
    ranks a case up when one of its deadlines passed after the last scan."""
    with session_scope(engine) as s:
        team, _, me = _setup(s, now)
        calm = make_case(s, now=now, team=team, assignee=me, state="referral", days_in_state=1)
        # 12 days against a limit of 7: past 150 %, escalated by its stored deadlines,
        # though the last scan saw it only due soon.
        stale = make_case(s, now=now, team=team, assignee=me, state="referral",
                          days_in_state=12)
        stale.flag_rank = FlagSeverity.DUE_SOON.rank
        stored = make_case(s, now=now, team=team, assignee=me, state="referral",
                           days_in_state=1)
        stored.flag_rank = FlagSeverity.STALLED.rank  # e.g. a patient-clock flag
        actor = actor_for(me)
    with session_scope(engine, write=False) as s:
        rows = queue(s, actor=actor, now=now).rows
    assert [r.case_id for r in rows] == [stale.id, stored.id, calm.id]
    assert [r.severity for r in rows] == [FlagSeverity.ESCALATED, FlagSeverity.STALLED, None]


def test_search_takes_percent_underscore_and_quotes_literally(engine, now):
    with session_scope(engine) as s:
        team, _, me = _setup(s, now)
        odd = make_case(s, now=now, team=team, assignee=me,
                        patient=make_patient(s, now=now, first="Mary", last="O'Brien%_x"))
        plain = make_case(s, now=now, team=team, assignee=me,
                          patient=make_patient(s, now=now, first="Mary", last="Obrien"))
        mrn = make_case(s, now=now, team=team, assignee=me,
                        patient=make_patient(s, now=now, mrn="AB%123"))
        actor = actor_for(me)
    with session_scope(engine) as s:
        def found(text):  # noqa: ANN001, ANN202
            return {r.case_id for r in queue(s, actor=actor, now=now,
                                             filters=TriageFilters(search=text)).rows}

        assert found("o'brien") == {odd.id}
        assert found("%") == {odd.id, mrn.id}
        assert found("_") == {odd.id}
        assert found("mary") == {odd.id, plain.id}
        assert found("ab%1") == {mrn.id}
        assert found("'; DROP TABLE cases; --") == set()
        searches = s.exec(select(AuditEntry).where(AuditEntry.action == "search")).all()
    assert len(searches) == 6
    assert all("brien" not in (a.detail or "").lower() for a in searches)


def test_keyset_pages_cover_the_queue_once_in_order(engine, now):
    with session_scope(engine) as s:
        team, _, me = _setup(s, now)
        for i in range(23):
            make_case(s, now=now, team=team, assignee=me, state="referral",
                      days_in_state=(i * 7) % 11, biopsy_days_ago=5 + i % 3)
        actor = actor_for(me)
    with session_scope(engine, write=False) as s:
        whole = [r.case_id for r in queue(s, actor=actor, now=now, limit=100).rows]
        seen, cursor = [], None
        while True:
            page = queue(s, actor=actor, now=now, after=cursor, limit=5)
            seen += [r.case_id for r in page.rows]
            if page.next_cursor is None:
                break
            cursor = type(page.next_cursor).decode(page.next_cursor.encode())
    assert seen == whole and len(whole) == 23


def test_filters_and_headline_stay_inside_the_team(engine, now):
    with session_scope(engine) as s:
        team, other, me = _setup(s, now)
        manager = make_user(s, now=now, team=team, role=Role.MANAGER)
        make_case(s, now=now, team=team, assignee=me, state="records_requested",
                  days_in_state=16)
        make_case(s, now=now, team=team, state="assessed", days_in_state=0)
        make_case(s, now=now, team=other, state="assessed", days_in_state=5)
        m, c = actor_for(manager), actor_for(me)
    with session_scope(engine, write=False) as s:
        assert len(queue(s, actor=m, now=now).rows) == 2
        assert len(queue(s, actor=m, now=now,
                         filters=TriageFilters(assignee=Assignee.UNASSIGNED)).rows) == 1
        assert len(queue(s, actor=m, now=now,
                         filters=TriageFilters(states=("records_requested",))).rows) == 1
        assert len(queue(s, actor=m, now=now, filters=TriageFilters(flag="sla")).rows) == 1
        h = headline(s, actor=c, now=now)
        assert (h.open_cases, h.stalled, h.escalated) == (1, 1, 1)
        assert headline(s, actor=m, now=now).open_cases == 2


def test_like_pattern_escapes_wildcards():
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"
