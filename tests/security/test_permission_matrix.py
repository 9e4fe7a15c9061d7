"""The permission matrix, cell by cell, through the real code paths.

For every role x action x (own team, other team) of `core.permissions.MATRIX` the test
does the real thing - the core function a page or the CLI calls - and checks that an
allowed cell works and a forbidden one raises PermissionDenied *and* leaves exactly one
audit row with outcome 'denied' for that user. Queries are checked to filter inside SQL:
a team outside reach never shows up, even when asked for by id.

On SQLite and PostgreSQL (one database per backend for the module: every probe builds
its own cases, so cells do not depend on each other). The pages (AppTest) and the CLI
have their own walks in tests/security/ui/test_matrix_pages.py and below.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core import audit
from core.actor import Actor
from core.analytics.filters import CaseFilter
from core.analytics.funnel import funnel
from core.db import session_scope
from core.errors import PermissionDenied
from core.exports import ExportKind, ExportRequest, export_to_file
from core.models import AuditEntry, Case, SlaRule, Team, User
from core.permissions import MATRIX, Action, can
from core.queries.audit_log import AuditFilter, search_audit
from core.queries.case_detail import case_detail
from core.queries.triage import Assignee, TriageFilters, queue
from core.sla_rules import update_rule
from core.users import create_user
from core.vocab import CaseState, Role
from core.workflows import case_ops
from core.workflows.engine import move_case
from core.workflows.intake import create_case_from_assessment
from core.workflows.states import Move
from tests.conftest import _drop_pg, _pg_engine, _sqlite_engine
from tests.factories import actor_for, make_case, make_specialist, make_team, make_user
from tests.workflows.helpers import assessment

NOW_OFFSET = timedelta(0)
_seq = itertools.count(1)


@dataclass
class Side:
    team: Team
    coordinator: User
    coordinator2: User
    manager: User


@dataclass
class World:
    engine: object
    own: Side
    other: Side
    admin: User
    now: object

    def actor(self, role: Role) -> Actor:
        user = {Role.COORDINATOR: self.own.coordinator, Role.MANAGER: self.own.manager,
                Role.ADMIN: self.admin}[role]
        return actor_for(user, session_id="matrix")

    def side(self, where: str) -> Side:
        return self.own if where == "own" else self.other


def _side(session, now, name) -> Side:
    team = make_team(session, now=now, name=name)
    return Side(team, make_user(session, now=now, team=team),
                make_user(session, now=now, team=team),
                make_user(session, now=now, team=team, role=Role.MANAGER))


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request, tmp_path_factory, sqlite_template):
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    if request.param == "sqlite":
        engine, name = _sqlite_engine(tmp_path_factory.mktemp("matrix"), sqlite_template), None
    else:
        pg = request.getfixturevalue("pg_cluster")
        engine, name = _pg_engine(pg)
    with session_scope(engine) as s:
        w = World(engine, _side(s, now, "Own team"), _side(s, now, "Other team"),
                  make_user(s, now=now, team=None, role=Role.ADMIN), now)
        make_specialist(s)
    yield w
    engine.dispose()
    if name:
        _drop_pg(request.getfixturevalue("pg_cluster"), name)


def _new_case(w: World, side: Side, **fields) -> int:
    with session_scope(w.engine) as s:
        fields.setdefault("second_opinion_reasons", "wants_confirmation")
        return make_case(s, now=w.now - timedelta(days=1), team=side.team,
                         assignee=side.coordinator, **fields).id


# --- one probe per action: do the real thing on `side`'s team as `actor` -----------------


def p_view_queue(w, actor, side):
    case_id = _new_case(w, side)
    with session_scope(w.engine) as s:
        page = queue(s, actor=actor, now=w.now,
                     filters=TriageFilters(team_id=side.team.id, assignee=Assignee.ANYONE),
                     limit=500)
    assert case_id in {r.case_id for r in page.rows}


def p_view_case(w, actor, side):
    case_id = _new_case(w, side)
    with session_scope(w.engine) as s:
        assert case_detail(s, case_id=case_id, actor=actor, now=w.now).case.id == case_id


def p_create_case(w, actor, side):
    with session_scope(w.engine) as s:
        case = create_case_from_assessment(s, assessment=assessment(), team_id=side.team.id,
                                           assignee_id=None, actor=actor, now=w.now)
    assert case.team_id == side.team.id


def p_move_case(w, actor, side):
    case_id = _new_case(w, side)
    with session_scope(w.engine) as s:
        case = move_case(s, case_id=case_id, move=Move.START_REFERRAL, actor=actor, now=w.now)
    assert case.state == CaseState.REFERRAL


def p_reassign(w, actor, side):
    case_id = _new_case(w, side)
    with session_scope(w.engine) as s:
        case = case_ops.assign(s, case_id=case_id, assignee_id=side.coordinator2.id,
                               actor=actor, now=w.now)
    assert case.assignee_id == side.coordinator2.id


def p_reopen(w, actor, side):
    case_id = _new_case(w, side, state="closed")
    with session_scope(w.engine) as s:
        case = move_case(s, case_id=case_id, move=Move.REOPEN, actor=actor, now=w.now,
                         reason="closed by mistake")
    assert case.state == CaseState.ASSESSED


def p_view_analytics(w, actor, side):
    _new_case(w, side)
    with session_scope(w.engine, write=False) as s:
        table = funnel(s, actor, CaseFilter(team_id=side.team.id))
    assert len(table) > 0


def _export(w, actor, side, identified: bool, tmp_dir):
    _new_case(w, side)
    path = tmp_dir / f"export{next(_seq)}.csv"
    req = ExportRequest(ExportKind.CASES, CaseFilter(team_id=side.team.id),
                        identified=identified,
                        reason="tumour board review" if identified else None)
    result = export_to_file(w.engine, actor, req, path, now=w.now)
    assert result.rows >= 1 and path.exists()


def p_export_deidentified(w, actor, side, tmp_dir):
    _export(w, actor, side, False, tmp_dir)


def p_export_identified(w, actor, side, tmp_dir):
    _export(w, actor, side, True, tmp_dir)


def p_manage_users(w, actor, side):
    with session_scope(w.engine) as s:
        user = create_user(s, username=f"new{next(_seq)}", full_name="New Nurse",
                           role=Role.COORDINATOR, password="long enough password",
                           team_id=side.team.id, actor=actor, now=w.now)
    assert user.team_id == side.team.id


def p_manage_sla(w, actor, side):
    with session_scope(w.engine) as s:
        current = s.get(SlaRule, "referral").limit_days
        rule, _ = update_rule(s, state="referral", limit_days=current % 30 + 1,
                              business_days=False, actor=actor, now=w.now)
    assert rule.limit_days == current % 30 + 1


def p_view_audit(w, actor, side):
    # Write the entry to be found first: under xdist this cell may be the first of the
    # module to run, on an audit log that holds nothing yet.
    case_id = _new_case(w, side)
    with session_scope(w.engine) as s:
        audit.record(s, actor=actor_for(side.coordinator, session_id="matrix"),
                     action="case.view", now=w.now, case_id=case_id)
    with session_scope(w.engine) as s:
        rows = search_audit(s, actor=actor, now=w.now,
                            filters=AuditFilter(case_id=case_id), limit=5)
    assert [(r.action, r.user_id) for r in rows] == [("case.view", side.coordinator.id)]


PROBES: dict[Action, Callable] = {
    Action.VIEW_QUEUE: p_view_queue,
    Action.VIEW_CASE: p_view_case,
    Action.CREATE_CASE: p_create_case,
    Action.MOVE_CASE: p_move_case,
    Action.REASSIGN: p_reassign,
    Action.REOPEN: p_reopen,
    Action.VIEW_ANALYTICS: p_view_analytics,
    Action.EXPORT_DEIDENTIFIED: p_export_deidentified,
    Action.EXPORT_IDENTIFIED: p_export_identified,
    Action.MANAGE_USERS: p_manage_users,
    Action.MANAGE_SLA: p_manage_sla,
    Action.VIEW_AUDIT: p_view_audit,
}
CELLS = [(role, action, where) for role in MATRIX for action in MATRIX[role]
         for where in ("own", "other")]


def test_every_action_of_the_matrix_has_a_probe():
    assert set(PROBES) == set(Action) == {a for row in MATRIX.values() for a in row}


def _denials(w: World, user_id: int) -> int:
    with session_scope(w.engine, write=False) as s:
        return s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.user_id == user_id, AuditEntry.outcome == "denied")).scalar_one()


@pytest.mark.parametrize(("role", "action", "where"), CELLS,
                         ids=[f"{r.value}-{a.value}-{w}" for r, a, w in CELLS])
def test_matrix_cell(world, tmp_path, role, action, where):
    actor = world.actor(role)
    side = world.side(where)
    probe = PROBES[action]
    args = (world, actor, side) + ((tmp_path,) if action in (
        Action.EXPORT_DEIDENTIFIED, Action.EXPORT_IDENTIFIED) else ())
    before = _denials(world, actor.user_id)
    if can(actor, action, side.team.id):
        probe(*args)
        assert _denials(world, actor.user_id) == before
    else:
        with pytest.raises(PermissionDenied):
            probe(*args)
        assert _denials(world, actor.user_id) == before + 1, "the refusal was not audited"


# --- queries filter by team inside SQL ---------------------------------------------------


def test_queries_never_show_another_teams_cases_even_unfiltered(world):
    theirs = _new_case(world, world.other)
    for role in (Role.COORDINATOR, Role.MANAGER):
        actor = world.actor(role)
        with session_scope(world.engine) as s:
            page = queue(s, actor=actor, now=world.now,
                         filters=TriageFilters(assignee=Assignee.ANYONE), limit=500)
            assert theirs not in {r.case_id for r in page.rows}
            assert {s.get(Case, r.case_id).team_id for r in page.rows} <= {world.own.team.id}
        if can(actor, Action.VIEW_ANALYTICS):
            with session_scope(world.engine, write=False) as s:
                mine = funnel(s, actor, CaseFilter())
            with session_scope(world.engine, write=False) as s:
                own_only = funnel(s, actor, CaseFilter(team_id=world.own.team.id))
            assert mine.equals(own_only)


# --- the CLI: `casedesk export --as-user` goes through the same cells ---------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("identified", [False, True])
@pytest.mark.parametrize("where", ["own", "other"])
def test_cli_export_follows_the_matrix(world, cli, tmp_path, role, identified, where):
    actor = world.actor(role)
    side = world.side(where)
    _new_case(world, side)
    action = Action.EXPORT_IDENTIFIED if identified else Action.EXPORT_DEIDENTIFIED
    args = ["export", "cases", "--out", str(tmp_path / "x.csv"), "--team", side.team.name,
            "--as-user", actor.username]
    if identified:
        args += ["--identified", "--reason", "tumour board review"]
    before = _denials(world, actor.user_id)
    result = cli(world.engine, *args)
    if can(actor, action, side.team.id):
        assert result.exit_code == 0, result.output
        assert (tmp_path / "x.csv").exists()
    else:
        assert result.exit_code == 1 and "may not" in result.output
        assert not (tmp_path / "x.csv").exists()
        assert _denials(world, actor.user_id) == before + 1
    assert os.environ.get("CASEDESK_DATABASE_URL")  # the command used the test database
