"""Intake, the records checklist, contacts and the operations around a case."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from core.config import get_settings
from core.db import session_scope
from core.errors import GuardFailed, PermissionDenied, ValidationError
from core.models import AuditEntry, Case, CaseEvent, ContactAttempt, Patient
from core.vocab import (
    CaseState,
    CloseReason,
    Priority,
    RecordKind,
    RecordStatus,
    Requirement,
)
from core.workflows import case_ops, contacts, records
from core.workflows.engine import available_moves, get_case_for_view, move_case
from core.workflows.intake import assess, create_case_from_assessment
from core.workflows.states import Move
from tests.factories import make_specialist, make_user
from tests.workflows.helpers import (
    assessment,
    items,
    make_world,
    new_case,
    satisfy_request_records,
    walk_to,
)

ROOT = Path(__file__).resolve().parents[2]


def _actions(session, case_id):
    return list(session.exec(select(AuditEntry.action).where(AuditEntry.case_id == case_id)
                             .order_by(AuditEntry.id)).all())


# --- intake -----------------------------------------------------------------------------------

def test_a_candidate_becomes_a_case_in_assessed_with_its_checklist(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now, first_name="  ANA ", last_name="Silva  Pérez")
        assert (case.state, case.version, case.assignee_id) == (
            CaseState.ASSESSED, 1, world.coordinator.id)
        assert case.due_at == now + timedelta(days=2)
        assert case.candidacy_reasons.startswith("Candidate: reason: wants the diagnosis")
        patient = s.get(Patient, case.patient_id)
        assert patient.search_name == "ana silva pérez"
        checklist = {(i.kind, i.facility): i.requirement for i in items(s, case.id)}
        assert checklist[("glass_slides", "St. Mary's")] == Requirement.REQUIRED
        assert checklist[("imaging_images", "Valley Radiology")] == Requirement.REQUIRED
        assert checklist[("medication_list", "Patient")] == Requirement.REQUIRED
        assert checklist[("signed_release", "St. Mary's")] == Requirement.REQUIRED
        assert checklist[("signed_release", "Valley Radiology")] == Requirement.REQUIRED
        assert checklist[("staging_scans", "Valley Radiology")] == Requirement.CONDITIONAL
        assert checklist[("paraffin_blocks", "St. Mary's")] == Requirement.OPTIONAL
        assert ("operative_note", "St. Mary's") not in checklist  # no treatment yet
        assert ("signed_release", "Patient") not in checklist
        events = s.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)).all()
        assert [(e.from_state, e.to_state) for e in events] == [(None, "assessed")]
        assert _actions(s, case.id) == ["case.create"]


def test_a_non_candidate_is_recorded_and_closed_with_the_reason(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now, diagnosis_category="other")
        assert case.state == CaseState.CLOSED
        assert case.close_reason == CloseReason.NOT_A_CANDIDATE
        assert "outside it" in case.close_note
        assert case.closed_from_state == CaseState.ASSESSED
        assert case.due_at is None
        assert _actions(s, case.id) == ["case.create", "case.move"]


def test_treatment_started_adds_the_conditional_surgical_records(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now, treatment_status="treatment_started",
                        imaging_facility=None)
        kinds = {(i.kind, i.facility) for i in items(s, case.id)}
        assert ("operative_note", "St. Mary's") in kinds
        assert ("imaging_report", "Imaging facility (to be confirmed)") in kinds


def test_assess_explains_the_result_and_flags_urgency():
    today = date(2026, 11, 25)
    result = assess(assessment(planned_treatment_start=date(2026, 12, 5)), today)
    assert result.candidate and result.urgent
    assert "treatment planned to start in 10 days" in result.reasons
    result = assess(assessment(reasons=(), biopsy_date=None), today)
    assert not result.candidate
    assert result.reasons[:2] == ["no diagnosing biopsy yet: there is no diagnosis to review",
                                  "no reason for a second opinion was given"]


def test_an_urgent_candidate_gets_urgent_priority(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now, biopsy_date=now.date() - timedelta(days=40))
        assert case.priority == Priority.URGENT


def test_intake_refuses_an_assignee_from_another_team(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        with pytest.raises(ValidationError, match="cannot be assigned"):
            create_case_from_assessment(s, assessment=assessment(), team_id=world.team.id,
                                        assignee_id=world.outsider.id, actor=world.coord,
                                        now=now)


def test_intake_for_another_team_is_refused(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        with pytest.raises(PermissionDenied):
            create_case_from_assessment(s, assessment=assessment(), team_id=world.team.id,
                                        assignee_id=None, actor=world.stranger, now=now)


# --- records ------------------------------------------------------------------------------------

def test_requesting_receiving_and_waiving_records_bump_the_version_and_are_audited(
        engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.RECORDS_REQUESTED, now)
        slides = items(s, case.id, kind=RecordKind.GLASS_SLIDES)[0]
        path = items(s, case.id, kind=RecordKind.PATHOLOGY_REPORT)[0]
        v = case.version
        case = records.request_record(s, item_id=slides.id, actor=world.coord, now=t)
        s.refresh(slides)
        assert (slides.status, slides.chase_on) == (RecordStatus.REQUESTED,
                                                    t.date() + timedelta(days=7))
        case = records.set_tracking_number(s, item_id=slides.id, tracking_number="1Z999",
                                           actor=world.coord, now=t)
        case = records.receive_record(s, item_id=slides.id, actor=world.coord,
                                      now=t + timedelta(days=2))
        case = records.waive_record(s, item_id=path.id, reason="included in slides",
                                    actor=world.coord, now=t + timedelta(days=2))
        assert case.version == v + 4
        s.refresh(slides)
        s.refresh(path)
        assert (slides.status, slides.tracking_number, slides.chase_on) == (
            RecordStatus.RECEIVED, "1Z999", None)
        assert (path.status, path.waive_reason) == (RecordStatus.WAIVED, "included in slides")
        assert _actions(s, case.id)[-4:] == ["record.request", "record.tracking",
                                             "record.receive", "record.waive"]


def test_a_tracking_number_belongs_to_material_sent_by_courier(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        report = items(s, case.id, kind=RecordKind.PATHOLOGY_REPORT)[0]
        with pytest.raises(ValidationError, match="not sent by courier"):
            records.set_tracking_number(s, item_id=report.id, tracking_number="1Z",
                                        actor=world.coord, now=now)


def test_a_record_from_a_new_facility_brings_its_release_form(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        records.add_record_item(s, case_id=case.id, kind="prior_comparison",
                                facility="Hill Imaging", requirement="required",
                                actor=world.coord, now=now)
        kinds = {(i.kind, i.facility) for i in items(s, case.id)}
        assert {("prior_comparison", "Hill Imaging"), ("signed_release", "Hill Imaging")} <= kinds
        with pytest.raises(ValidationError, match="already on the checklist"):
            records.add_record_item(s, case_id=case.id, kind="prior_comparison",
                                    facility="Hill Imaging", actor=world.coord, now=now)


def test_a_waived_required_record_counts_as_in(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.RECORDS_REQUESTED, now)
        for item in items(s, case.id, requirement=Requirement.REQUIRED):
            if item.status == RecordStatus.NEEDED:
                records.waive_record(s, item_id=item.id, reason="not available",
                                     actor=world.coord, now=t)
        case = move_case(s, case_id=case.id, move=Move.RECORDS_COMPLETE, actor=world.coord,
                         now=t)
        assert case.state == CaseState.RECORDS_RECEIVED


# --- contacts -----------------------------------------------------------------------------------

def test_three_failed_attempts_in_a_row_are_counted_and_a_reach_resets_them(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        for i, outcome in enumerate(["no_answer", "voicemail", "no_answer"]):
            case = contacts.log_contact(s, case_id=case.id, channel="phone", outcome=outcome,
                                        next_try_at=now + timedelta(days=i + 1),
                                        note="left a message", actor=world.coord,
                                        now=now + timedelta(hours=i))
        assert contacts.failed_attempts_in_a_row(s, case_id=case.id) == 3
        assert case.version == 4
        contacts.log_contact(s, case_id=case.id, channel="sms", outcome="reached",
                             actor=world.coord, now=now + timedelta(hours=5))
        assert contacts.failed_attempts_in_a_row(s, case_id=case.id) == 0


# --- hold, assignment, specialist, insurance, outcome --------------------------------------------

def test_a_hold_pauses_the_sla_clock_and_resume_moves_the_deadlines_later(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        assert case.due_at == now + timedelta(days=2)
        case = case_ops.put_on_hold(s, case_id=case.id, reason="waiting for the insurer",
                                    resume_on=now.date() + timedelta(days=5),
                                    actor=world.coord, now=now + timedelta(hours=12))
        assert case.on_hold and case.due_at is None and case.escalate_at is None
        case = case_ops.resume(s, case_id=case.id, actor=world.coord,
                               now=now + timedelta(days=3, hours=12))
        assert not case.on_hold
        assert case.paused_seconds == 3 * 86400
        assert case.due_at == now + timedelta(days=5)
        assert _actions(s, case.id)[-2:] == ["case.hold", "case.resume"]


def test_a_move_ends_a_hold_and_starts_a_fresh_clock(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        case_ops.put_on_hold(s, case_id=case.id, reason="lab", actor=world.coord, now=now,
                             resume_on=now.date() + timedelta(days=3))
        later = now + timedelta(days=1)
        case = move_case(s, case_id=case.id, move=Move.START_REFERRAL, actor=world.coord,
                         now=later)
        assert (case.on_hold, case.paused_seconds) == (False, 0)
        assert case.due_at == later + timedelta(days=7)


def test_a_coordinator_may_take_an_unassigned_case_and_a_manager_may_reassign_it(
        sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = create_case_from_assessment(s, assessment=assessment(), team_id=world.team.id,
                                           assignee_id=None, actor=world.coord, now=now)
        case = case_ops.assign(s, case_id=case.id, assignee_id=world.coordinator.id,
                               actor=world.coord, now=now)
        assert case.assignee_id == world.coordinator.id
        colleague = make_user(s, now=now, team=world.team)
        case = case_ops.assign(s, case_id=case.id, assignee_id=colleague.id, actor=world.mgr,
                               now=now)
        assert case.assignee_id == colleague.id
        with pytest.raises(ValidationError, match="cannot be assigned"):
            case_ops.assign(s, case_id=case.id, assignee_id=world.outsider.id,
                            actor=world.mgr, now=now)


def test_the_insurance_referral_gates_the_request_for_records(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.REFERRAL, now, referral_required=True)
        assert case.referral_status == "pending"
        satisfy_request_records(s, world, case, t)
        case = s.get(Case, case.id)
        assert available_moves(s, case=case, actor=world.coord, now=t)[
            Move.REQUEST_RECORDS] == [
            "the insurance referral is required and not obtained (it is pending)"]
        with pytest.raises(ValidationError, match="goes with an obtained referral"):
            case_ops.set_referral_status(s, case_id=case.id, referral_status="denied",
                                         authorization_number="A1", actor=world.coord, now=t)
        case_ops.set_referral_status(s, case_id=case.id, referral_status="obtained",
                                     authorization_number="AUTH-77", actor=world.coord, now=t)
        case = move_case(s, case_id=case.id, move=Move.REQUEST_RECORDS, actor=world.coord,
                         now=t)
        assert case.state == CaseState.RECORDS_REQUESTED


def test_an_inactive_specialist_cannot_be_chosen(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        retired = make_specialist(s, "Dr. Gone")
        retired.is_active = False
        s.add(retired)
        s.flush()
        with pytest.raises(ValidationError, match="no longer takes cases"):
            case_ops.choose_specialist(s, case_id=case.id, specialist_id=retired.id,
                                       actor=world.coord, now=now)


def test_the_outcome_is_recorded_only_after_the_visit_and_stops_the_seen_clock(
        engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.SCHEDULED, now)
        with pytest.raises(GuardFailed, match="has not been seen yet"):
            case_ops.record_outcome(s, case_id=case.id, diagnosis="confirmed",
                                    plan="unchanged", additional_cancer_found=False,
                                    actor=world.coord, now=t)
        case = case_ops.set_appointment(s, case_id=case.id, appointment_at=t + timedelta(hours=2),
                                        actor=world.coord, now=t)
        t = t + timedelta(hours=3)
        case = move_case(s, case_id=case.id, move=Move.MARK_SEEN, actor=world.coord, now=t)
        assert case.due_at == t + timedelta(days=14)
        with pytest.raises(ValidationError, match="what led to the change"):
            case_ops.record_outcome(s, case_id=case.id, diagnosis="changed", plan="major_change",
                                    additional_cancer_found=True, actor=world.coord, now=t)
        case = case_ops.record_outcome(s, case_id=case.id, diagnosis="changed",
                                       plan="major_change", sources=["pathology", "imaging"],
                                       additional_cancer_found=True, actor=world.coord, now=t)
        assert (case.outcome_diagnosis, case.outcome_sources, case.due_at) == (
            "changed", "pathology,imaging", None)


def test_viewing_a_case_is_audited_and_refused_to_other_teams(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        get_case_for_view(s, case_id=case.id, actor=world.coord, now=now)
        assert _actions(s, case.id)[-1] == "case.view"
        with pytest.raises(PermissionDenied):
            get_case_for_view(s, case_id=case.id, actor=world.stranger, now=now)


# --- the one write path ----------------------------------------------------------------------

def _updates_case(call: ast.AST) -> bool:
    """Is this `.values(...)` hanging off an `update(Case)`?"""
    node = call.func.value if isinstance(call, ast.Call) else call
    while isinstance(node, ast.Call | ast.Attribute):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "update"
                and node.args and getattr(node.args[0], "id", None) == "Case"):
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def _sets_case_state(tree: ast.AST) -> list[int]:
    """Lines that assign `case.state = ...` (any name containing "case"), build
    `Case(state=...)`, or run `update(Case)...values(state=...)`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets
                      if isinstance(t, ast.Attribute) and t.attr == "state"
                      and "case" in getattr(t.value, "id", "").lower()]
        if isinstance(node, ast.Call) and any(k.arg == "state" for k in node.keywords):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "Case" or (name == "values" and _updates_case(node)):
                lines.append(node.lineno)
    return lines


def test_nothing_outside_the_engine_sets_a_case_state():
    allowed = {ROOT / "core" / "workflows" / "engine.py"}
    offenders = []
    for folder in ("core", "dashboard"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in allowed or "migrations" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except SyntaxError:
                continue  # someone's work in progress; not this test's business
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n in _sets_case_state(tree)]
    assert offenders == []


def test_a_next_try_given_as_a_day_means_that_morning_local_time(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        contacts.log_contact(s, case_id=case.id, channel="phone", outcome="no_answer",
                             next_try_at=date(2026, 11, 27), actor=world.coord, now=now)
        attempt = s.exec(select(ContactAttempt)).one()
        expected = datetime(2026, 11, 27, 9, 0, tzinfo=get_settings().tz)
        assert attempt.next_try_at == expected.astimezone(UTC)
