"""Admins edit SLA limits; every stored deadline follows in the same transaction."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.db import session_scope
from core.errors import PermissionDenied, ValidationError
from core.models import AuditEntry, Case, SlaRule
from core.sla_rules import update_rule
from core.vocab import Role
from tests.factories import actor_for, make_case, make_team, make_user


def _setup(engine, now):
    with session_scope(engine) as s:
        team = make_team(s, now=now)
        admin = make_user(s, now=now, team=None, role=Role.ADMIN)
        coord = make_user(s, now=now, team=team)
        case = make_case(s, now=now, team=team, state="records_requested", days_in_state=4)
        return actor_for(admin), actor_for(coord), case.id


def test_raising_a_limit_moves_the_stored_deadline_of_open_cases(engine, now):
    admin, _, case_id = _setup(engine, now)
    with session_scope(engine) as s:
        _, moved = update_rule(s, state="records_requested", limit_days=20,
                               business_days=False, actor=admin, now=now)
    assert moved == 1
    with session_scope(engine, write=False) as s:
        case = s.get(Case, case_id)
        assert round((case.due_at - now).total_seconds() / 86400, 3) == 16.0
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "sla.update")).one()
        assert '"limit_days": 10' in entry.detail and '"limit_days": 20' in entry.detail


def test_a_coordinator_may_not_edit_limits(engine, now):
    _, coord, _ = _setup(engine, now)
    with pytest.raises(PermissionDenied):
        with session_scope(engine) as s:
            update_rule(s, state="referral", limit_days=3, business_days=False, actor=coord,
                        now=now)


@pytest.mark.parametrize("state,days,message", [
    ("referral", 0, "between 1 and 365"),
    ("referral", 10_000, "between 1 and 365"),
    ("stalled", 5, "Unknown state"),
    ("referral", True, "whole number"),
])
def test_bad_limits_are_refused_and_nothing_changes(sqlite_engine, now, state, days, message):
    admin, _, _ = _setup(sqlite_engine, now)
    with pytest.raises(ValidationError, match=message):
        with session_scope(sqlite_engine) as s:
            update_rule(s, state=state, limit_days=days, business_days=False, actor=admin,
                        now=now)
    with session_scope(sqlite_engine, write=False) as s:
        assert s.get(SlaRule, "referral").limit_days == 7
