"""Case page actions beyond the moves: flags, hold and resume, notes, reassignment,
and paging through a long queue."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from core.models import Case, CaseFlag, Note
from core.vocab import Role
from tests import factories
from tests.dashboard.conftest import click, sign_in


def _open(at, case_id):  # noqa: ANN001, ANN202
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    return at.run()


def _seed(app_db, **fields):  # noqa: ANN001, ANN202
    nina = app_db.add_user("nina", full_name="Nina Park")
    omar = app_db.add_user("omar", full_name="Omar Diaz")
    app_db.add_user("meg", role=Role.MANAGER, full_name="Meg Stone")
    with app_db.session() as s:
        team = app_db.team(s)
        case = factories.make_case(s, now=app_db.now - timedelta(days=3), team=team,
                                   assignee=nina, state="referral", **fields)
        flag = CaseFlag(case_id=case.id, kind="sla", severity="stalled", state="referral",
                        raised_at=app_db.now)
        s.add(flag)
        s.flush()
        return case.id, flag.id, omar.id


def test_acknowledge_a_flag_hold_resume_and_note(app_db, make_app):
    case_id, flag_id, _ = _seed(app_db)
    at = _open(sign_in(make_app(), "nina"), case_id)
    at.text_input(key=f"ack_note_{flag_id}").input("Called the lab, slides ship Monday")
    at.button(key=f"ack_{flag_id}").click()
    at.run()
    assert not at.error, [e.value for e in at.error]
    at.text_input(key="hold_reason").input("Waiting for the insurer")
    click(at, "Put on hold")
    at.run()
    assert not at.error, [e.value for e in at.error]
    with app_db.session(write=False) as s:
        case = s.get(Case, case_id)
        assert case.on_hold and case.due_at is None
        assert s.get(CaseFlag, flag_id).ack_note == "Called the lab, slides ship Monday"
    click(at, "Resume")
    at.run()
    at.text_area(key="note_body").input("Patient prefers mornings. [link](http://x)")
    click(at, "Add note")
    at.run()
    assert not at.error, [e.value for e in at.error]
    with app_db.session(write=False) as s:
        assert not s.get(Case, case_id).on_hold
        assert s.exec(select(Note.body)).one().startswith("Patient prefers")
    # The note is shown as plain text, not as Markdown.
    assert any("[link](http://x)" in t.value for t in at.text)


def test_a_manager_reassigns_and_a_coordinator_cannot(app_db, make_app):
    case_id, _, omar_id = _seed(app_db)
    at = _open(sign_in(make_app(), "nina"), case_id)
    assert "Reassign" not in [b.label for b in at.button]
    at = _open(sign_in(make_app(), "meg"), case_id)
    at.selectbox(key="assign_to").set_value(omar_id)
    click(at, "Reassign")
    at.run()
    assert not at.error, [e.value for e in at.error]
    with app_db.session(write=False) as s:
        assert s.get(Case, case_id).assignee_id == omar_id


def test_next_and_previous_page_walk_a_long_queue(app_db, make_app):
    nina = app_db.add_user("nina")
    with app_db.session() as s:
        team = app_db.team(s)
        for i in range(55):
            factories.make_case(s, now=app_db.now, team=team, assignee=nina,
                                state="referral", days_in_state=i % 9)
    at = sign_in(make_app(), "nina")
    first = list(at.dataframe[0].value["Case"])
    assert len(first) == 50
    click(at, "Next page")
    at.run()
    second = list(at.dataframe[0].value["Case"])
    assert len(second) == 5 and not set(first) & set(second)
    click(at, "Previous page")
    at.run()
    assert list(at.dataframe[0].value["Case"]) == first


def test_close_has_no_default_reason_and_refuses_until_one_is_chosen(app_db, make_app):
    case_id, _, _ = _seed(app_db)
    at = _open(sign_in(make_app(), "nina"), case_id)
    assert at.selectbox(key="close_reason").value is None
    at.button(key="move_close").click()
    at.run()
    assert at.error, "closing without a reason is refused with a message"
    with app_db.session(write=False) as s:
        assert s.get(Case, case_id).state == "referral"
    at.selectbox(key="close_reason").select("declined")
    at.button(key="move_close").click()
    at.run()
    with app_db.session(write=False) as s:
        case = s.get(Case, case_id)
        assert (case.state, case.close_reason) == ("closed", "declined")


def test_record_missing_names_the_records_and_they_are_requested_again(app_db, make_app):
    from core.models import RecordItem

    nina = app_db.add_user("nina", full_name="Nina Park")
    with app_db.session() as s:
        case = factories.make_case(s, now=app_db.now - timedelta(days=1), team=app_db.team(s),
                                   assignee=nina, state="records_received")
        slides = factories.make_record(s, case=case, now=app_db.now, status="received",
                                       requested_at=app_db.now - timedelta(days=6),
                                       received_at=app_db.now - timedelta(days=2))
        case_id, slides_id = case.id, slides.id
    at = _open(sign_in(make_app(), "nina"), case_id)
    at.text_input(key="reason_record_missing").input("slides broken in transit")
    click(at, "Record missing")
    at.run()
    # nothing chosen: said, and nothing moved
    assert any("choose the records that are missing" in e.value for e in at.error), \
        [e.value for e in at.error]
    with app_db.session(write=False) as s:
        assert s.get(Case, case_id).state == "records_received"
    at.multiselect(key=f"missing_items_{case_id}").select(slides_id)
    click(at, "Record missing")
    at.run()
    assert not at.error, [e.value for e in at.error]
    with app_db.session(write=False) as s:
        assert s.get(Case, case_id).state == "records_requested"
        assert s.get(RecordItem, slides_id).status == "requested"
    # and the case page now offers to chase it, not to mark the records complete
    assert any(b.label == "Records complete" and b.disabled for b in at.button)


def test_add_a_record_to_the_checklist_from_the_case_page(app_db, make_app):
    from core.models import RecordItem

    case_id, _, _ = _seed(app_db)
    at = _open(sign_in(make_app(), "nina"), case_id)
    at.selectbox(key="add_kind").set_value("operative_note")
    at.text_input(key="add_facility").input("Mercy Hospital")
    click(at, "Add to the checklist")
    at.run()
    assert not at.error, [e.value for e in at.error]
    with app_db.session(write=False) as s:
        kinds = {(i.kind, i.facility) for i in s.exec(
            select(RecordItem).where(RecordItem.case_id == case_id))}
    assert ("operative_note", "Mercy Hospital") in kinds
    assert ("signed_release", "Mercy Hospital") in kinds  # a new facility needs a release
