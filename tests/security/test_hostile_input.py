"""Hostile input (issue 7, item 4), each rule tried with a value meant to break it:
NFC for names and search, NUL bytes refused, length limits with a clear message before
the database (SQLite does not enforce VARCHAR lengths), impossible and contradictory
dates, and direction controls stripped where text leaves the app."""

from __future__ import annotations

import unicodedata
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.errors import GuardFailed, ValidationError
from core.models import NAME_MAX, NOTE_MAX, AuditEntry, Case, Note, Patient
from core.validation import search_key, strip_bidi
from core.vocab import CaseState, RecordKind
from core.workflows import case_ops, contacts, records
from core.workflows.engine import move_case
from core.workflows.states import Move
from tests.workflows.helpers import items, make_world, new_case, walk_to

NFD_NAME = "Jose\u0301 Mun\u0303oz"  # "José Muñoz" with combining accents
NFC_NAME = unicodedata.normalize("NFC", NFD_NAME)
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "fdp.exe" shows as "exe.pdf"


def _count(session, model) -> int:
    return session.execute(select(func.count()).select_from(model)).scalar_one()


# --- NFC --------------------------------------------------------------------------------


def test_names_are_stored_nfc_whatever_form_they_arrive_in(engine, now):
    first, last = NFD_NAME.split()
    with session_scope(engine) as session:
        world = make_world(session, now)
        case = new_case(session, world, now, first_name=first, last_name=last)
        patient = session.get(Patient, case.patient_id)
    assert patient.first_name == unicodedata.normalize("NFC", first) != first
    assert patient.last_name == unicodedata.normalize("NFC", last)
    assert patient.search_name == search_key(NFC_NAME) == "josé muñoz"


def test_a_search_typed_in_nfd_matches_a_name_stored_in_nfc():
    # The pages search with search_key(...) against Patient.search_name.
    assert search_key(NFD_NAME) == search_key(NFC_NAME.upper()) == search_key(
        "  José   Muñoz ")


# --- NUL bytes --------------------------------------------------------------------------


def _nul_attempts(session, world, case, now):
    """Every free-text input of the write path, each given a NUL byte."""
    item = items(session, case.id, kind=RecordKind.GLASS_SLIDES)[0]
    return {
        "first name": lambda: new_case(session, world, now, first_name="Ana\x00"),
        "last name": lambda: new_case(session, world, now, last_name="\x00"),
        "facility": lambda: new_case(session, world, now, biopsy_facility="St\x00Mary"),
        "insurer": lambda: case_ops.set_insurance(session, case_id=case.id, actor=world.coord,
                                                  now=now, insurer="Aetna\x00"),
        "note": lambda: case_ops.add_note(session, case_id=case.id, body="ok\x00DROP",
                                          actor=world.coord, now=now),
        "hold reason": lambda: case_ops.put_on_hold(
            session, case_id=case.id, reason="\x00", resume_on=now.date() + timedelta(days=3),
            actor=world.coord, now=now),
        "contact note": lambda: contacts.log_contact(
            session, case_id=case.id, channel="phone", outcome="no_answer",
            actor=world.coord, now=now, note="left msg\x00"),
        "close note": lambda: move_case(session, case_id=case.id, move=Move.CLOSE,
                                        actor=world.coord, now=now, close_reason="other",
                                        close_note="dup\x00"),
        "waive reason": lambda: records.waive_record(
            session, item_id=item.id, reason="n/a\x00", actor=world.coord, now=now),
        "tracking number": lambda: records.receive_record(
            session, item_id=item.id, actor=world.coord, now=now, tracking_number="1Z\x00"),
    }


def test_nul_bytes_are_refused_everywhere_text_comes_in(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case = new_case(session, world, now)
        before = (_count(session, Patient), _count(session, Note), _count(session, AuditEntry))
        refused = []
        for field, attempt in _nul_attempts(session, world, case, now).items():
            with pytest.raises(ValidationError, match="NUL"):
                attempt()
            refused.append(field)
        assert len(refused) == 10
        # Refused before the database: nothing written, the case did not move on.
        after = (_count(session, Patient), _count(session, Note), _count(session, AuditEntry))
        assert after == before
        assert session.get(Case, case.id, populate_existing=True).version == case.version


# --- length limits ----------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "limit"), [
    ("first_name", "A" * 10_000, NAME_MAX),
    ("last_name", "\u00e9" * (NAME_MAX + 1), NAME_MAX),  # one over, in 2-byte characters
    ("biopsy_facility", "x" * 121, 120),
])
def test_an_overlong_intake_answer_is_refused_with_the_limit_before_the_database(
        sqlite_engine, now, field, value, limit):
    # SQLite is the database that would store an overlong value without complaint.
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        with pytest.raises(ValidationError, match=f"too long.*limit is {limit:,}"):
            new_case(session, world, now, **{field: value})
        assert _count(session, Patient) == 0


def test_an_overlong_note_is_refused_and_one_at_the_limit_is_kept(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case = new_case(session, world, now)
        with pytest.raises(ValidationError, match=f"Note is too long.*{NOTE_MAX:,}"):
            case_ops.add_note(session, case_id=case.id, body="n" * (NOTE_MAX + 1),
                              actor=world.coord, now=now)
        case_ops.add_note(session, case_id=case.id, body="n" * NOTE_MAX, actor=world.coord,
                          now=now)
        assert _count(session, Note) == 1


def test_nfc_is_applied_before_the_length_is_counted(sqlite_engine, now):
    # 120 decomposed "é" are 240 code points but 120 characters once normalised.
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        case = new_case(session, world, now, last_name="e\u0301" * NAME_MAX)
        assert session.get(Patient, case.patient_id).last_name == "\u00e9" * NAME_MAX


# --- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["2026-02-30", "2026-13-01", "2025-02-29", "30/02/2026",
                                 "2026-02-30'; DROP TABLE cases;--"])
def test_impossible_biopsy_dates_are_refused(sqlite_engine, now, bad):
    with session_scope(sqlite_engine) as session:
        world = make_world(session, now)
        with pytest.raises(ValidationError, match="Biopsy date.*not a valid date"):
            new_case(session, world, now, biopsy_date=bad)


def test_a_biopsy_in_the_future_is_refused(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        tomorrow = now.date() + timedelta(days=1)
        with pytest.raises(ValidationError, match="Biopsy date cannot be in the future"):
            new_case(session, world, now, biopsy_date=tomorrow.isoformat())
        with pytest.raises(ValidationError, match="in the future"):
            new_case(session, world, now, date_of_birth=date(2100, 1, 1))


def test_an_appointment_before_the_records_were_requested_is_refused(engine, now):
    """Two replicas with skewed clocks: records requested at `now` by one, the visit
    booked by another whose clock runs two hours behind, for a time before the request."""
    with session_scope(engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.RECORDS_RECEIVED, now)
        requested = min(i.requested_at for i in items(session, case.id) if i.requested_at)
        skewed_now = requested - timedelta(hours=2)
        with pytest.raises(GuardFailed, match="before the records were requested"):
            move_case(session, case_id=case.id, move=Move.SCHEDULE, actor=world.coord,
                      now=skewed_now, appointment_at=requested - timedelta(hours=1),
                      specialist_id=world.specialist.id)
        with pytest.raises(GuardFailed, match="must be in the future"):
            move_case(session, case_id=case.id, move=Move.SCHEDULE, actor=world.coord, now=t,
                      appointment_at=t - timedelta(minutes=1),
                      specialist_id=world.specialist.id)


def test_a_record_cannot_arrive_before_it_was_requested(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case = new_case(session, world, now)
        item = items(session, case.id, kind=RecordKind.GLASS_SLIDES)[0]
        records.request_record(session, item_id=item.id, actor=world.coord, now=now)
        with pytest.raises(ValidationError, match="before it was requested"):
            records.receive_record(session, item_id=item.id, actor=world.coord, now=now,
                                   received_at=now - timedelta(days=1))


def test_an_appointment_text_that_is_not_a_time_is_refused(engine, now):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, CaseState.RECORDS_RECEIVED, now)
        with pytest.raises(ValidationError, match="not a valid date and time"):
            move_case(session, case_id=case.id, move=Move.SCHEDULE, actor=world.coord, now=t,
                      appointment_at="2026-02-30 10:00", specialist_id=world.specialist.id)


# --- direction controls -----------------------------------------------------------------


def test_direction_controls_are_stripped_by_strip_bidi():
    hostile = f"Ana{RLO}fdp.exe\u2066x\u2069\u200f"
    assert strip_bidi(hostile) == "Anafdp.exex"


def test_direction_controls_never_leave_in_an_export_and_formulas_are_neutralised(
        engine, now, tmp_path):
    from core.analytics.filters import CaseFilter
    from core.exports import ExportKind, ExportRequest, export_to_file
    from core.validation import BIDI_CONTROLS

    with session_scope(engine) as session:
        world = make_world(session, now)
        new_case(session, world, now, first_name=f"Ana{RLO}fdp.exe",
                 last_name="=HYPERLINK(\"http://evil.example\")",
                 biopsy_facility=f"\u2066St Mary\u2069{RLO}")
    req = ExportRequest(ExportKind.CASES, CaseFilter(team_id=world.team.id), identified=True,
                        reason="tumour board review")
    result = export_to_file(engine, world.mgr, req, tmp_path / "out.csv", now=now)
    text = (tmp_path / "out.csv").read_text(encoding="utf-8-sig")
    assert result.rows == 1
    assert not BIDI_CONTROLS.search(text)
    assert "Anafdp.exe" in text  # the text itself is kept, only the controls go
    assert "'=HYPERLINK" in text  # a spreadsheet shows it, never runs it


def test_direction_controls_never_reach_a_file_name():
    from core.exports import safe_file_name

    name = safe_file_name(f"cases-{RLO}vsc.exe")
    assert RLO not in name and "/" not in safe_file_name("../../etc/passwd")
    assert not any(c in name for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def test_the_queue_search_finds_a_name_typed_in_another_unicode_form(engine, now):
    from core.queries.triage import Assignee, TriageFilters, queue

    first, last = NFD_NAME.split()
    with session_scope(engine) as session:
        world = make_world(session, now)
        wanted = new_case(session, world, now, first_name=first, last_name=last)
        new_case(session, world, now, first_name="Ana", last_name="Silva")

    def search(term):
        with session_scope(engine) as session:
            page = queue(session, actor=world.coord, now=now,
                         filters=TriageFilters(search=term, assignee=Assignee.ANYONE))
        return {r.case_id for r in page.rows}

    assert search(NFC_NAME) == search(NFD_NAME) == search("JOSÉ muñoz") == {wanted.id}
    assert search("%") == search("_") == set()  # LIKE wildcards are taken literally
    with pytest.raises(ValidationError, match="NUL"):
        search("jos\x00")
