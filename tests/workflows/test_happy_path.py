"""A case walks the whole funnel through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlmodel import select

from core import audit
from core.db import session_scope
from core.models import AuditEntry, CaseEvent
from core.vocab import CaseState, CloseReason
from core.workflows import case_ops
from core.workflows.engine import move_case
from core.workflows.states import Move
from tests.workflows.helpers import make_world, walk_to


def test_a_case_walks_from_assessment_to_completed(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.SEEN, now)
        assert case.state == CaseState.SEEN
        assert case.due_at is not None  # seen runs until the outcome is in
        case = case_ops.record_outcome(session, case_id=case.id, diagnosis="refined",
                                       plan="minor_change", sources=["pathology"],
                                       additional_cancer_found=False, actor=world.coord, now=t)
        assert case.due_at is None
        case = move_case(session, case_id=case.id, move=Move.CLOSE, actor=world.coord, now=t,
                         close_reason=CloseReason.COMPLETED)
        assert case.state == CaseState.CLOSED
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)
                              .order_by(CaseEvent.id)).all()
        assert [e.to_state for e in events] == [
            "assessed", "referral", "records_requested", "records_received", "scheduled",
            "seen", "closed"]
        assert audit.verify_chain(session).ok
        actions = session.exec(select(AuditEntry.action)).all()
        assert actions.count("case.move") == 6
