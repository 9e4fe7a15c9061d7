"""The nightly full recompute of stored deadlines (and after an admin edits a limit)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from core.db import session_scope
from core.models import Case, JobRun, SlaRule
from core.scan import run_recompute
from core.workflows.clocks import recompute_all_deadlines
from tests.factories import make_case, make_team


def test_recompute_fixes_stale_deadlines_and_clears_stopped_clocks(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        right = make_case(session, now=now, team=team, state="referral", days_in_state=1)
        stale = make_case(session, now=now, team=team, state="referral", days_in_state=1)
        held = make_case(session, now=now, team=team, state="referral", days_in_state=1)
        session.execute(update(Case).where(Case.id == stale.id)
                        .values(due_at=now, due_soon_at=now, escalate_at=now))
        session.execute(update(Case).where(Case.id == held.id).values(on_hold=True))
    with session_scope(engine) as session:
        assert recompute_all_deadlines(session, now=now, batch_size=2) == 2
    with session_scope(engine) as session:
        got = {c.id: c for c in session.execute(select(Case)).scalars()}
        assert got[stale.id].due_at == got[right.id].due_at == now + timedelta(days=6)
        assert (got[held.id].due_soon_at, got[held.id].due_at, got[held.id].escalate_at) == (
            None, None, None)
        assert recompute_all_deadlines(session, now=now) == 0  # nothing left to change


def test_recompute_applies_an_edited_limit_and_records_its_run(engine, now):
    with session_scope(engine) as session:
        case = make_case(session, now=now, team=make_team(session, now=now), state="referral",
                         days_in_state=1)
        session.execute(update(SlaRule).where(SlaRule.state == "referral").values(limit_days=10))
    assert run_recompute(engine, now=now, worker="test") == 1
    with session_scope(engine) as session:
        assert session.get(Case, case.id).due_at == now + timedelta(days=9)
        run = session.execute(select(JobRun)).scalar_one()
        assert (run.job, run.status, run.examined) == ("recompute_deadlines", "ok", 1)
