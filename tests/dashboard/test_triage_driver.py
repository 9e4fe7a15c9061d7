"""The triage queue read on the driver's cursor (core.driver_sql.fetch_all): the same page
as through SQLAlchemy, the outstanding records counted by the same subquery that picks
the first one, errors wrapped as SQLAlchemy wraps them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from core import driver_sql
from core.db import session_scope
from core.queries.triage import Assignee, TriageFilters, queue
from tests.factories import actor_for, make_case, make_record, make_team, make_user


def _page(engine, actor, now, **kwargs):  # noqa: ANN001, ANN202
    with session_scope(engine, write=False) as s:
        return queue(s, actor=actor, now=now, **kwargs)


def test_records_counted_and_first_one_named_by_one_subquery(engine, now):
    with session_scope(engine) as s:
        team = make_team(s, now=now)
        me = make_user(s, now=now, team=team)
        case = make_case(s, now=now, team=team, assignee=me, state="records_requested",
                         days_in_state=3)
        # The oldest outstanding required record is named; a '|' in its facility is kept.
        make_record(s, case=case, now=now, facility="North | South Labs", status="requested",
                    requested_at=now - timedelta(days=5))
        make_record(s, case=case, now=now, kind="imaging_report", status="needed",
                    requested_at=now - timedelta(days=2))
        make_record(s, case=case, now=now, kind="pathology_report", status="requested",
                    requested_at=now - timedelta(days=1))
        # Neither counts: received, and not required.
        make_record(s, case=case, now=now, kind="glass_slides", facility="Elsewhere",
                    status="received", requested_at=now - timedelta(days=9))
        make_record(s, case=case, now=now, kind="imaging_report", facility="Optional Ltd",
                    requirement="optional", status="needed",
                    requested_at=now - timedelta(days=9))
        alone = make_case(s, now=now, team=team, assignee=me, state="records_requested",
                          days_in_state=1)
        make_record(s, case=alone, now=now, status="needed")
        actor = actor_for(me)
    rows = {r.case_id: r for r in _page(engine, actor, now).rows}
    assert rows[case.id].why.endswith(
        "glass slides from North | South Labs not received (+2 more)")
    assert rows[case.id].next_action == "Chase North | South Labs for the glass slides"
    assert rows[alone.id].why.endswith("glass slides from Valley Pathology not requested yet")
    assert rows[alone.id].next_action == "Request glass slides from Valley Pathology"


def test_the_cursor_path_gives_the_page_sqlalchemy_gives(engine, now):
    """With a cursor-event listener the statement goes through exec_driver_sql (so
    listeners and echo see it); without one, straight to the driver: same pages."""
    with session_scope(engine) as s:
        team = make_team(s, now=now)
        me = make_user(s, now=now, team=team)
        for i, state in enumerate(["assessed", "referral", "records_requested", "scheduled",
                                   "seen", "records_received"] * 2):
            c = make_case(s, now=now, team=team, assignee=me if i % 3 else None,
                          state=state, days_in_state=i + 1)
            if state == "records_requested":
                make_record(s, case=c, now=now, status="requested")
        actor = actor_for(me)
    filters = TriageFilters(assignee=Assignee.ANYONE)
    direct = _page(engine, actor, now, filters=filters, limit=5)
    direct_next = _page(engine, actor, now, filters=filters, limit=5, after=direct.next_cursor)
    sent = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    try:
        seen = _page(engine, actor, now, filters=filters, limit=5)
        seen_next = _page(engine, actor, now, filters=filters, limit=5, after=seen.next_cursor)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert any("neg_rank" in st for st in sent)
    assert len(direct.rows) == 5 and direct_next.rows
    assert (direct.rows, direct.next_cursor) == (seen.rows, seen.next_cursor)
    assert (direct_next.rows, direct_next.next_cursor) == (seen_next.rows, seen_next.next_cursor)


def test_fetch_all_wraps_driver_errors_like_sqlalchemy(engine):
    with engine.connect() as conn:
        assert driver_sql.fetch_all(conn, "SELECT 1, 'a'", ()) == [(1, "a")]
        with pytest.raises(DBAPIError) as raised:
            driver_sql.fetch_all(conn, "SELECT * FROM no_such_table", ())
        assert not raised.value.connection_invalidated
