"""Every (state, move) pair of the table (DESIGN.md section 4): an allowed move succeeds
when its guards hold and names every failing guard when they don't; a move not in the
table is refused with the current state and the moves that are allowed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import func, select

from core.config import get_settings
from core.db import session_scope
from core.errors import GuardFailed, PermissionDenied, TransitionNotAllowed
from core.models import Case, CaseEvent
from core.vocab import CaseState, CloseReason, RecordKind, RecordStatus, Requirement
from core.workflows import case_ops, records
from core.workflows.engine import available_moves, move_case
from core.workflows.states import TRANSITIONS, Move, allowed_moves, target_state
from tests.workflows.helpers import (
    items,
    make_world,
    new_case,
    satisfy_records_complete,
    satisfy_request_records,
    walk_to,
)

PAIRS = [(s, m) for s in CaseState for m in Move]
ALLOWED = [(s, m) for s, m in PAIRS if s in TRANSITIONS[m].sources]
REFUSED = [(s, m) for s, m in PAIRS if s not in TRANSITIONS[m].sources]



def _local(at):  # noqa: ANN001, ANN202 - refusal messages give times in the service's zone
    return at.astimezone(get_settings().tz)

def _events(session, case_id):
    return session.exec(select(func.count()).select_from(CaseEvent)
                        .where(CaseEvent.case_id == case_id)).one()


# --- guards hold: what each move needs, given a case walked to its source state ----------

def _good(move, session, world, case, t):
    """(actor, kwargs) that satisfy every guard of `move` for `case`."""
    if move is Move.REQUEST_RECORDS:
        satisfy_request_records(session, world, case, t)
    if move is Move.RECORDS_COMPLETE:
        satisfy_records_complete(session, world, case, t)
    if move is Move.SCHEDULE:
        return world.coord, {"appointment_at": t + timedelta(days=3)}
    if move is Move.RECORD_MISSING:
        received = [i.id for i in items(session, case.id) if i.status == RecordStatus.RECEIVED]
        return world.coord, {"reason": "pathology block missing",
                             "missing_items": received[:1]}
    if move is Move.NO_SHOW:
        return world.coord, {"reason": "pathology block missing"}
    if move is Move.CLOSE:
        return world.coord, {"close_reason": CloseReason.DECLINED}
    if move is Move.REOPEN:
        return world.mgr, {"reason": "patient called back"}
    return world.coord, {}


# --- guards fail: set the case up so that each guard of the move is unmet -----------------

def _bad(move, session, world, case, t):
    """(actor, kwargs, the exact list of unmet conditions expected)."""
    if move is Move.START_REFERRAL:
        # A non-candidate reopened by a manager, with nobody assigned.
        closed = new_case(session, world, t, reasons=())
        reopened = move_case(session, case_id=closed.id, move=Move.REOPEN, actor=world.mgr,
                             now=t, reason="re-assess")
        case_ops.assign(session, case_id=reopened.id, assignee_id=None, actor=world.mgr, now=t)
        return reopened, world.coord, {}, [
            "the assessment did not find a candidate "
            "(no reason for a second opinion was given)",
            "no coordinator is assigned"]
    if move is Move.REQUEST_RECORDS:
        case_ops.set_insurance(session, case_id=case.id, referral_required=True,
                               actor=world.coord, now=t)
        return case, world.coord, {}, [
            "no specialist is chosen",
            "the insurance referral is required and not obtained (it is pending)",
            "2 signed releases not on file: St. Mary's, Valley Radiology"]
    if move is Move.RECORDS_COMPLETE:
        for item in items(session, case.id, requirement=Requirement.REQUIRED):
            if item.status == RecordStatus.RECEIVED or item.kind in (
                    RecordKind.GLASS_SLIDES, RecordKind.IMAGING_IMAGES):
                continue
            records.receive_record(session, item_id=item.id, actor=world.coord, now=t)
        return case, world.coord, {}, [
            "2 required records missing: glass slides (St. Mary's), "
            "imaging images (Valley Radiology)"]
    if move is Move.SCHEDULE:
        return case, world.coord, {"appointment_at": t - timedelta(minutes=1)}, [
            "the appointment must be in the future"]
    if move is Move.MARK_SEEN:
        # The appointment is still ahead: mark seen a minute before it.
        return case, world.coord, {"_now": case.appointment_at - timedelta(minutes=1)}, [
            f"the appointment ({_local(case.appointment_at):%Y-%m-%d %H:%M %Z}) "
            "has not happened yet"]
    if move is Move.RECORD_MISSING:
        return case, world.coord, {"reason": "   ", "missing_items": []}, [
            "a reason is needed", "choose the records that are missing"]
    if move in (Move.NO_SHOW, Move.REOPEN):
        actor = world.mgr if move is Move.REOPEN else world.coord
        return case, actor, {"reason": "   "}, ["a reason is needed"]
    if move is Move.CLOSE:
        return case, world.coord, {"close_reason": CloseReason.OTHER}, [
            "closing for 'other' needs a note saying why"]
    raise AssertionError(move)


@pytest.mark.parametrize(("state", "move"), ALLOWED, ids=[f"{s}-{m}" for s, m in ALLOWED])
def test_each_allowed_move_succeeds_when_its_guards_hold(sqlite_engine, now, state, move):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, state, now)
        actor, kwargs = _good(move, session, world, case, t)
        case = session.get(Case, case.id)
        before_version, before_events = case.version, _events(session, case.id)
        expected = target_state(move, closed_from_state=case.closed_from_state)
        if move is Move.MARK_SEEN:
            t = max(t, case.appointment_at)
        assert available_moves(session, case=case, actor=actor, now=t)[move] == []
        moved = move_case(session, case_id=case.id, move=move, actor=actor, now=t,
                          expected_version=before_version, **kwargs)
        assert moved.state == expected
        assert moved.version == before_version + 1
        assert moved.state_entered_at == t
        assert _events(session, case.id) == before_events + 1


@pytest.mark.parametrize(("state", "move"), ALLOWED, ids=[f"{s}-{m}" for s, m in ALLOWED])
def test_each_allowed_move_names_every_failing_guard_and_changes_nothing(
        sqlite_engine, now, state, move):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, state, now)
        case, actor, kwargs, expected = _bad(move, session, world, case, t)
        at = kwargs.pop("_now", t)
        before = session.get(Case, case.id)
        before_version, before_events = before.version, _events(session, case.id)
        with pytest.raises(GuardFailed) as err:
            move_case(session, case_id=case.id, move=move, actor=actor, now=at, **kwargs)
        assert err.value.reasons == expected
        for reason in expected:
            assert reason in str(err.value)
        after = session.get(Case, case.id)
        assert (after.state, after.version) == (state.value, before_version)
        assert _events(session, case.id) == before_events


@pytest.mark.parametrize(("state", "move"), REFUSED, ids=[f"{s}-{m}" for s, m in REFUSED])
def test_each_move_not_in_the_table_is_refused_naming_the_state_and_allowed_moves(
        sqlite_engine, now, state, move):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, state, now)
        actor = world.mgr
        with pytest.raises(TransitionNotAllowed) as err:
            move_case(session, case_id=case.id, move=move, actor=actor, now=t,
                      reason="because")
        message = str(err.value)
        assert state.value.replace("_", " ") in message
        for allowed in allowed_moves(state):
            assert allowed.label.lower() in message
        assert session.get(Case, case.id).state == state


def test_every_state_and_move_pair_is_covered_by_the_table_tests():
    assert len(ALLOWED) + len(REFUSED) == len(CaseState) * len(Move) == 63
    # close from each of the six open states, reopen from closed, seven forward/back moves
    assert len(ALLOWED) == 6 + 1 + 7


def test_reopen_by_a_coordinator_is_refused_and_shown_as_a_condition(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.CLOSED, now)
        assert available_moves(session, case=case, actor=world.coord, now=t)[Move.REOPEN] == [
            "only a manager or an admin may reopen a case"]
        with pytest.raises(PermissionDenied):
            move_case(session, case_id=case.id, move=Move.REOPEN, actor=world.coord, now=t,
                      reason="patient called back")
        assert session.get(Case, case.id).state == CaseState.CLOSED


def test_reopen_returns_the_case_to_the_state_it_was_closed_from(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.RECORDS_RECEIVED, now)
        move_case(session, case_id=case.id, move=Move.CLOSE, actor=world.coord, now=t,
                  close_reason="unreachable")
        case = move_case(session, case_id=case.id, move=Move.REOPEN, actor=world.adm,
                         now=t + timedelta(days=1), reason="patient called back")
        assert case.state == CaseState.RECORDS_RECEIVED
        assert case.close_reason is None and case.due_at is not None


def test_no_show_counts_and_clears_the_appointment(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.SCHEDULED, now)
        case = move_case(session, case_id=case.id, move=Move.NO_SHOW, actor=world.coord,
                         now=t, reason="patient did not come")
        assert (case.state, case.no_show_count, case.appointment_at) == (
            CaseState.RECORDS_RECEIVED, 1, None)


def test_completed_is_refused_before_the_outcome_is_recorded(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.SEEN, now)
        with pytest.raises(GuardFailed, match="outcome is recorded"):
            move_case(session, case_id=case.id, move=Move.CLOSE, actor=world.coord, now=t,
                      close_reason="completed")


def test_available_moves_lists_the_reasons_a_button_is_disabled(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.REFERRAL, now)
        moves = available_moves(session, case=case, actor=world.coord, now=t)
        assert list(moves) == [Move.REQUEST_RECORDS, Move.CLOSE]
        assert moves[Move.REQUEST_RECORDS] == [
            "no specialist is chosen",
            "2 signed releases not on file: St. Mary's, Valley Radiology"]
        assert moves[Move.CLOSE] == []
