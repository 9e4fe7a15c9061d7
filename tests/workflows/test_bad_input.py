"""Bad input gets a typed error with a message a coordinator understands, and changes
nothing: the case row, its history, notes, contacts, checklist and the audit log are as
they were. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import func, select

from core import audit as audit_module
from core.db import session_scope
from core.errors import (
    GuardFailed,
    NotFoundError,
    PermissionDenied,
    StaleCaseError,
    TransitionNotAllowed,
    ValidationError,
)
from core.models import AuditEntry, Case, CaseEvent, ContactAttempt, Note, Patient, RecordItem
from core.vocab import AuditOutcome, CaseState, RecordKind, RecordStatus
from core.workflows import case_ops, contacts, records
from core.workflows.engine import move_case
from core.workflows.intake import create_case_from_assessment
from core.workflows.states import Move
from tests.workflows.helpers import advance, assessment, items, make_world, walk_to


def snapshot(engine, case_id):
    with session_scope(engine, write=False) as s:
        c = s.get(Case, case_id)

        def count(model, *where):
            return s.exec(select(func.count()).select_from(model).where(*where)).one()

        return (
            c.state, c.version, c.updated_at, c.on_hold, c.assignee_id, c.due_at,
            count(CaseEvent, CaseEvent.case_id == case_id),
            count(Note, Note.case_id == case_id),
            count(ContactAttempt, ContactAttempt.case_id == case_id),
            # A refusal may itself be audited (access.denied); no change is audited as done.
            count(AuditEntry, AuditEntry.outcome == AuditOutcome.OK),
            tuple((i.id, i.status, i.requested_at, i.received_at, i.chase_on, i.waive_reason)
                  for i in s.exec(select(RecordItem).where(RecordItem.case_id == case_id)
                                  .order_by(RecordItem.id))),
        )


@pytest.fixture
def scene(engine, now):
    """A case waiting in records_requested, one requested item, and the time after."""
    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.RECORDS_REQUESTED, now)
        slides = items(s, case.id, kind=RecordKind.GLASS_SLIDES)[0]
        records.request_record(s, item_id=slides.id, actor=world.coord, now=t)
    return engine, world, case.id, slides.id, t + timedelta(hours=1)


def refused(scene, error, op, match=None):
    engine, world, case_id, item_id, t = scene
    before = snapshot(engine, case_id)
    with pytest.raises(error, match=match) as info:
        with session_scope(engine) as s:
            op(s, world, case_id, item_id, t)
    assert snapshot(engine, case_id) == before
    return info.value


# --- unknown things -----------------------------------------------------------------------

def test_moving_an_unknown_case_is_refused_as_not_found(scene):
    refused(scene, NotFoundError, lambda s, w, c, i, t: move_case(
        s, case_id=987654, move=Move.CLOSE, actor=w.coord, now=t, close_reason="declined"),
        match="no case 987654")


def test_an_unknown_record_item_is_refused_as_not_found(scene):
    refused(scene, NotFoundError, lambda s, w, c, i, t: records.receive_record(
        s, item_id=987654, actor=w.coord, now=t), match="no record item")


def test_an_unknown_move_name_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: move_case(
        s, case_id=c, move="teleport", actor=w.coord, now=t), match="Unknown move")


def test_a_parameter_the_move_does_not_take_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.RECORDS_COMPLETE, actor=w.coord, now=t,
        appointment_at=t), match="does not take appointment_at")


def test_an_unknown_close_reason_is_refused_with_the_list_of_reasons(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.CLOSE, actor=w.coord, now=t, close_reason="bored"),
        match="treated elsewhere")


# --- roles and teams ----------------------------------------------------------------------

def test_a_coordinator_cannot_reopen_a_case(scene):
    engine, world, case_id, _, t = scene
    with session_scope(engine) as s:
        move_case(s, case_id=case_id, move=Move.CLOSE, actor=world.coord, now=t,
                  close_reason="declined")
    err = refused(scene, PermissionDenied, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.REOPEN, actor=w.coord, now=t + timedelta(minutes=1),
        reason="she called back"))
    assert "coordinator" in str(err)


def test_an_admin_cannot_work_a_case_day_to_day(scene):
    refused(scene, PermissionDenied, lambda s, w, c, i, t: case_ops.add_note(
        s, case_id=c, body="hello", actor=w.adm, now=t))


def test_someone_from_another_team_learns_nothing_about_the_case(scene):
    err = refused(scene, PermissionDenied, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.MARK_SEEN, actor=w.stranger, now=t))
    assert "records" not in str(err)  # not even the state the case is in


def test_a_coordinator_cannot_reassign_someone_elses_case(scene):
    refused(scene, PermissionDenied, lambda s, w, c, i, t: case_ops.assign(
        s, case_id=c, assignee_id=w.manager.id, actor=w.coord, now=t))


# --- empty reasons ------------------------------------------------------------------------

def test_an_empty_reason_for_a_missing_record_is_refused(scene):
    engine, world, case_id, _, t = scene
    with session_scope(engine) as s:
        case = s.get(Case, case_id)
        advance(s, world, case, t)
    err = refused(scene, GuardFailed, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.RECORD_MISSING, actor=w.coord, now=t + timedelta(hours=2),
        reason="  ", missing_items=[i]))
    assert err.reasons == ["a reason is needed"]


def test_closing_without_a_reason_is_refused(scene):
    err = refused(scene, GuardFailed, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.CLOSE, actor=w.coord, now=t))
    assert err.reasons == ["a reason for closing is needed"]


def test_waiving_a_record_without_a_reason_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: records.waive_record(
        s, item_id=i, reason="", actor=w.coord, now=t), match="Reason for waiving is required")


def test_a_hold_without_a_reason_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: case_ops.put_on_hold(
        s, case_id=c, reason="   ", resume_on=t.date() + timedelta(days=3), actor=w.coord,
        now=t), match="Reason for the hold is required")


# --- contradictory or impossible dates -----------------------------------------------------

def test_a_record_received_before_it_was_requested_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: records.receive_record(
        s, item_id=i, received_at=t - timedelta(days=2), actor=w.coord, now=t),
        match="before it was requested")


def test_a_record_received_in_the_future_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: records.receive_record(
        s, item_id=i, received_at=t + timedelta(days=1), actor=w.coord, now=t),
        match="cannot be in the future")


def test_a_chase_date_in_the_past_is_refused(scene):
    # (before the request too: a request is never in the future, so "in the past" says it)
    refused(scene, ValidationError, lambda s, w, c, i, t: records.set_chase_date(
        s, item_id=i, chase_on=t.date() - timedelta(days=5), actor=w.coord, now=t),
        match="cannot be in the past")


def test_february_30_is_not_a_date(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: records.set_chase_date(
        s, item_id=i, chase_on="2027-02-30", actor=w.coord, now=t),
        match="not a valid date")


def test_a_resume_date_in_the_past_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: case_ops.put_on_hold(
        s, case_id=c, reason="lab strike", resume_on=t.date() - timedelta(days=1),
        actor=w.coord, now=t), match="after today")


def test_a_next_try_before_the_attempt_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: contacts.log_contact(
        s, case_id=c, channel="phone", outcome="no_answer", next_try_at=t - timedelta(hours=1),
        actor=w.coord, now=t), match="next try must be after")


def test_marking_seen_before_the_appointment_is_refused(scene):
    engine, world, case_id, _, t = scene
    with session_scope(engine) as s:
        case, t2 = advance(s, world, s.get(Case, case_id), t)
        move_case(s, case_id=case_id, move=Move.SCHEDULE, actor=world.coord, now=t2,
                  appointment_at=t2 + timedelta(days=2))
    err = refused(scene, GuardFailed, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.MARK_SEEN, actor=w.coord, now=t2 + timedelta(days=1)))
    assert "has not happened yet" in err.reasons[0]


def test_intake_refuses_a_biopsy_in_the_future_and_stores_nothing(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
    with pytest.raises(ValidationError, match="Biopsy date cannot be in the future"):
        with session_scope(engine) as s:
            create_case_from_assessment(
                s, assessment=assessment(biopsy_date=now.date() + timedelta(days=3)),
                team_id=world.team.id, assignee_id=None, actor=world.coord, now=now)
    with session_scope(engine, write=False) as s:
        assert s.exec(select(func.count()).select_from(Case)).one() == 0


def test_intake_refuses_a_planned_start_before_the_biopsy(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        with pytest.raises(ValidationError, match="planned treatment start is before"):
            create_case_from_assessment(
                s, assessment=assessment(biopsy_date=date(2026, 11, 10),
                                         planned_treatment_start=date(2026, 11, 1)),
                team_id=world.team.id, assignee_id=None, actor=world.coord, now=now)
        assert s.exec(select(func.count()).select_from(Case)).one() == 0


# --- oversized and hostile text ------------------------------------------------------------

def test_a_one_megabyte_note_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: case_ops.add_note(
        s, case_id=c, body="x" * 1_000_000, actor=w.coord, now=t),
        match="too long: 1,000,000 characters, the limit is 5,000")


def test_a_nul_byte_in_a_note_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: case_ops.add_note(
        s, case_id=c, body="fine\x00then", actor=w.coord, now=t), match="NUL")


def test_a_nul_byte_in_a_move_reason_is_refused(scene):
    refused(scene, ValidationError, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.CLOSE, actor=w.coord, now=t, close_reason="other",
        close_note="moved\x00away"), match="NUL")


def test_a_nul_byte_in_a_patient_name_is_refused_at_intake(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
        with pytest.raises(ValidationError, match="NUL"):
            create_case_from_assessment(
                s, assessment=assessment(last_name="Sil\x00va"), team_id=world.team.id,
                assignee_id=None, actor=world.coord, now=now)


def test_notes_are_stored_unicode_normalised(scene):
    engine, world, case_id, _, t = scene
    with session_scope(engine) as s:
        case_ops.add_note(s, case_id=case_id, body="  Jose\u0301 called  ", actor=world.coord,
                          now=t)
    with session_scope(engine, write=False) as s:
        assert s.exec(select(Note.body)).one() == "Jos\u00e9 called"


# --- stale pages and half-done changes -------------------------------------------------------

def test_a_stale_page_is_refused_for_any_action_naming_who_changed_the_case(scene):
    engine, world, case_id, item_id, t = scene
    with session_scope(engine) as s:
        old = s.get(Case, case_id).version
        case_ops.add_note(s, case_id=case_id, body="first", actor=world.mgr, now=t)
    ops = [
        lambda s, w, c, i, t: case_ops.add_note(s, case_id=c, body="second", actor=w.coord,
                                                now=t, expected_version=old),
        lambda s, w, c, i, t: records.receive_record(s, item_id=i, actor=w.coord, now=t,
                                                     expected_version=old),
        lambda s, w, c, i, t: contacts.log_contact(s, case_id=c, channel="phone",
                                                   outcome="reached", actor=w.coord, now=t,
                                                   expected_version=old),
        lambda s, w, c, i, t: move_case(s, case_id=c, move=Move.CLOSE, actor=w.coord, now=t,
                                        close_reason="declined", expected_version=old),
    ]
    for op in ops:
        err = refused(scene, StaleCaseError, op)
        assert world.manager.full_name in str(err)


def test_a_failure_after_the_update_leaves_nothing_behind_even_if_the_caller_commits(
        scene, monkeypatch):
    engine, world, case_id, _, t = scene
    before = snapshot(engine, case_id)

    def broken(*args, **kwargs):
        raise RuntimeError("audit storage failed")

    monkeypatch.setattr(audit_module, "record", broken)
    with session_scope(engine) as s:
        with pytest.raises(RuntimeError):
            move_case(s, case_id=case_id, move=Move.CLOSE, actor=world.coord, now=t,
                      close_reason="declined")
        # the caller swallows the error and commits its transaction anyway
    assert snapshot(engine, case_id) == before


def test_a_move_not_allowed_names_the_state_and_the_allowed_moves(scene):
    err = refused(scene, TransitionNotAllowed, lambda s, w, c, i, t: move_case(
        s, case_id=c, move=Move.MARK_SEEN, actor=w.coord, now=t))
    assert "records requested" in str(err) and "records complete" in str(err)


def test_a_signed_release_cannot_be_waived(scene):
    engine, world, case_id, _, t = scene
    with session_scope(engine, write=False) as s:
        release = items(s, case_id, kind=RecordKind.SIGNED_RELEASE)[0]
        assert release.status == RecordStatus.RECEIVED
    refused(scene, ValidationError, lambda s, w, c, i, t: records.waive_record(
        s, item_id=release.id, reason="no need", actor=w.coord, now=t))


# --- a record number already on file -------------------------------------------------------

def _create(engine, world, now, team=None, actor=None, **overrides):
    with session_scope(engine) as s:
        return create_case_from_assessment(
            s, assessment=assessment(**overrides), team_id=(team or world.team).id,
            assignee_id=None, actor=actor or world.coord, now=now).id


def _counts(engine):
    with session_scope(engine, write=False) as s:
        return tuple(s.exec(select(func.count()).select_from(m)).one() for m in (Case, Patient))


BORN = date(1960, 5, 1)


@pytest.mark.parametrize("change", [
    {"first_name": "Other"},  # someone else's number
    {"date_of_birth": date(1961, 5, 1)},
    {"date_of_birth": None},  # a name and a number are not enough
])
def test_a_record_number_on_file_is_refused_unless_it_is_the_same_patient(engine, now, change):
    with session_scope(engine) as s:
        world = make_world(s, now)
    _create(engine, world, now, mrn="MRN-77", date_of_birth=BORN)
    before = _counts(engine)
    with pytest.raises(ValidationError, match="MRN-77 is already on file"):
        _create(engine, world, now, **{"mrn": "mrn-77", "date_of_birth": BORN, **change})
    assert _counts(engine) == before


def test_another_teams_patient_is_not_reached_by_name_and_record_number(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
    first = _create(engine, world, now, mrn="MRN-79", date_of_birth=BORN, phone="617 555 0111")
    with session_scope(engine) as s:
        move_case(s, case_id=first, move=Move.CLOSE, actor=world.mgr, now=now,
                  close_reason="declined", close_note="moved away")
    before = _counts(engine)
    with pytest.raises(ValidationError, match="already on file"):
        _create(engine, world, now + timedelta(days=1), team=world.other_team,
                actor=world.stranger, mrn="MRN-79", date_of_birth=BORN, phone="617 555 0222")
    assert _counts(engine) == before
    with session_scope(engine, write=False) as s:
        assert s.exec(select(Patient.phone).where(Patient.mrn == "MRN-79")).one() == "617 555 0111"


def test_a_returning_patient_gets_a_new_case_once_the_first_is_closed(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
    first = _create(engine, world, now, mrn="MRN-78", date_of_birth=BORN, phone="617 555 0111")
    before = _counts(engine)
    # the same person, the same number, while the first case is open: refused
    with pytest.raises(ValidationError, match=f"already has open case #{first}"):
        _create(engine, world, now, mrn="MRN-78", first_name=" ana ", date_of_birth=BORN)
    assert _counts(engine) == before
    with session_scope(engine) as s:
        move_case(s, case_id=first, move=Move.CLOSE, actor=world.mgr, now=now,
                  close_reason="declined", close_note="moved away")
    second = _create(engine, world, now + timedelta(days=1), mrn="mrn-78",
                     date_of_birth=BORN, phone="617 555 0222")
    with session_scope(engine, write=False) as s:
        patient = s.get(Patient, s.get(Case, first).patient_id)
        assert s.get(Case, second).patient_id == patient.id
        # what the patient says now replaces what was on file
        assert patient.phone == "617 555 0222"
        reused = s.exec(select(AuditEntry).where(
            AuditEntry.action == "case.patient_reused")).one()
        assert reused.case_id == second and '"updated": ["phone"]' in reused.detail
    assert _counts(engine) == (before[0] + 1, before[1])


# --- dates a slip of the picker gives --------------------------------------------------------

def test_a_hold_longer_than_the_limit_is_refused(scene):
    from core.workflows.case_ops import MAX_HOLD_DAYS

    far = (scene[4] + timedelta(days=MAX_HOLD_DAYS + 2)).date()
    refused(scene, ValidationError, lambda s, w, c, i, t: case_ops.put_on_hold(
        s, case_id=c, reason="waiting on the insurer", resume_on=far, actor=w.coord, now=t),
        match="at most 90 days")


def test_an_appointment_years_ahead_is_refused_when_scheduling(engine, now):
    from core.workflows.guards import MAX_APPOINTMENT_DAYS_AHEAD

    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.RECORDS_RECEIVED, now)
    before = snapshot(engine, case.id)
    with pytest.raises(GuardFailed, match=f"within {MAX_APPOINTMENT_DAYS_AHEAD} days"):
        with session_scope(engine) as s:
            move_case(s, case_id=case.id, move=Move.SCHEDULE, actor=world.coord, now=t,
                      appointment_at=t + timedelta(days=3 * 365),
                      specialist_id=world.specialist.id)
    assert snapshot(engine, case.id) == before


def test_the_date_limits_take_their_last_day_and_refuse_the_next(engine, now):
    from core.workflows.case_ops import MAX_HOLD_DAYS, put_on_hold, resume, set_appointment
    from core.workflows.clocks import local_today
    from core.workflows.guards import MAX_APPOINTMENT_DAYS_AHEAD

    with session_scope(engine) as s:
        world = make_world(s, now)
        case, t = walk_to(s, world, CaseState.SCHEDULED, now)
    last_hold_day = local_today(t) + timedelta(days=MAX_HOLD_DAYS)
    with pytest.raises(ValidationError, match="at most 90 days"):
        with session_scope(engine) as s:
            put_on_hold(s, case_id=case.id, reason="insurer", actor=world.coord, now=t,
                        resume_on=last_hold_day + timedelta(days=1))
    with session_scope(engine) as s:
        put_on_hold(s, case_id=case.id, reason="insurer", actor=world.coord, now=t,
                    resume_on=last_hold_day)
        resume(s, case_id=case.id, actor=world.coord, now=t)
    # rescheduling has the scheduling move's limit
    before = snapshot(engine, case.id)
    with pytest.raises(ValidationError, match=f"within {MAX_APPOINTMENT_DAYS_AHEAD} days"):
        with session_scope(engine) as s:
            set_appointment(s, case_id=case.id, actor=world.coord, now=t,
                            appointment_at=t + timedelta(days=MAX_APPOINTMENT_DAYS_AHEAD,
                                                         minutes=1))
    assert snapshot(engine, case.id) == before
    with session_scope(engine) as s:
        moved = set_appointment(s, case_id=case.id, actor=world.coord, now=t,
                                appointment_at=t + timedelta(days=MAX_APPOINTMENT_DAYS_AHEAD))
    assert moved.appointment_at == t + timedelta(days=MAX_APPOINTMENT_DAYS_AHEAD)


@pytest.mark.parametrize("field, value, message", [
    ("phone", "🙂🙂", "is not a phone number"),
    ("phone", "call me after 5", "is not a phone number"),
    ("phone", "12", "is not a phone number"),
    ("email", "Ana Silva", "is not an e-mail address"),
    ("email", "ana@clinic", "is not an e-mail address"),
])
def test_intake_refuses_contact_details_no_one_could_use(engine, now, field, value, message):
    with session_scope(engine) as s:
        world = make_world(s, now)
    before = _counts(engine)
    with pytest.raises(ValidationError, match=message):
        _create(engine, world, now, **{field: value})
    assert _counts(engine) == before


def test_intake_takes_phone_numbers_as_patients_give_them(engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
    for n, phone in enumerate(["(907) 555-9611", "+44 20 7946 0958", "001-907-555-9611x123",
                               "555.123.4567 ext. 12"]):
        case_id = _create(engine, world, now, first_name=f"Ana{n}", phone=phone,
                          email=f"ana{n}@clinic.example")
        with session_scope(engine, write=False) as s:
            assert s.get(Patient, s.get(Case, case_id).patient_id).phone == phone
