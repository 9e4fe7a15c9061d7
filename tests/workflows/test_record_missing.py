"""'Record missing' sends a case back with the records that are missing: they are
requested again in the same transaction, so 'Records complete' waits for them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import select

from core.db import session_scope
from core.errors import GuardFailed, NotFoundError, ValidationError
from core.models import AuditEntry, Case, RecordItem
from core.vocab import CaseState, RecordKind, RecordStatus, Requirement
from core.workflows.clocks import local_today
from core.workflows.engine import move_case
from core.workflows.records import DEFAULT_CHASE_DAYS
from core.workflows.states import Move
from tests.workflows.helpers import items, make_world, walk_to


@pytest.fixture
def received(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.RECORDS_RECEIVED, now)
        other, t = walk_to(s, world, CaseState.RECORDS_RECEIVED, t)
        slides = items(s, case.id, kind=RecordKind.GLASS_SLIDES)[0]
        foreign = items(s, other.id, kind=RecordKind.GLASS_SLIDES)[0]
        assert slides.status == RecordStatus.RECEIVED
        slides.tracking_number = "1Z-OLD-COURIER"  # the shipment that arrived broken
        s.add(slides)
    return engine, world, case.id, slides.id, foreign.id, t


def _missing(engine, world, case_id, t, ids):
    with session_scope(engine) as s:
        return move_case(s, case_id=case_id, move=Move.RECORD_MISSING, actor=world.coord,
                         now=t, reason="slides broken in transit", missing_items=ids)


def test_the_missing_records_are_requested_again_and_block_completion(received):
    engine, world, case_id, slides_id, _, t = received
    case = _missing(engine, world, case_id, t, [slides_id])
    assert case.state == CaseState.RECORDS_REQUESTED
    with session_scope(engine, write=False) as s:
        item = s.get(RecordItem, slides_id)
        assert (item.status, item.requirement) == (RecordStatus.REQUESTED,
                                                   Requirement.REQUIRED)
        assert item.received_at is None and item.tracking_number is None
        # the chase date counts the service's days (America/New_York), not UTC's
        assert item.chase_on == local_today(t) + timedelta(days=DEFAULT_CHASE_DAYS)
        move = s.exec(select(AuditEntry).where(AuditEntry.action == "case.move")
                      .order_by(AuditEntry.id.desc())).first()
        assert json.loads(move.detail)["missing_items"] == [slides_id]
    with pytest.raises(GuardFailed, match="required record missing"):
        with session_scope(engine) as s:
            move_case(s, case_id=case_id, move=Move.RECORDS_COMPLETE, actor=world.coord,
                      now=t)


@pytest.mark.parametrize("bad, error, match", [
    ("foreign", NotFoundError, "has no record item"),
    ([10**9], NotFoundError, "has no record item"),
    ("text", ValidationError, "checklist item ids"),
    ([True], ValidationError, "checklist item ids"),
    ([2**70], ValidationError, "checklist item ids"),  # past a database id
    (3.5, ValidationError, "checklist item ids"),
    ((i for i in [1]), ValidationError, "checklist item ids"),  # read once: not accepted
])
def test_a_record_not_on_this_case_is_refused_and_nothing_moves(received, bad, error, match):
    engine, world, case_id, slides_id, foreign_id, t = received
    ids = {"foreign": [foreign_id], "text": "slides"}[bad] if isinstance(bad, str) else bad
    with pytest.raises(error, match=match):
        _missing(engine, world, case_id, t, ids)
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_id).state == CaseState.RECORDS_RECEIVED
        assert s.get(RecordItem, slides_id).status == RecordStatus.RECEIVED
        assert s.get(RecordItem, foreign_id).status == RecordStatus.RECEIVED


def test_a_record_still_outstanding_is_not_missing(received):
    engine, world, case_id, slides_id, _, t = received
    with session_scope(engine, write=False) as s:
        waiting = [i.id for i in items(s, case_id)
                   if i.status in (RecordStatus.NEEDED, RecordStatus.REQUESTED)]
    assert waiting, "the walk leaves some optional record outstanding"
    with pytest.raises(ValidationError, match="still outstanding"):
        _missing(engine, world, case_id, t, [slides_id, waiting[0]])
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_id).state == CaseState.RECORDS_RECEIVED
        assert s.get(RecordItem, slides_id).status == RecordStatus.RECEIVED
