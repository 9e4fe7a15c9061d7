"""A case driven only through the UI: intake -> assessed -> ... -> seen with its outcome;
a refused move with its reasons; the stale-case refusal; the search with % and '."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

import core.timeutil
from core.models import Case, CaseEvent, RecordItem
from core.vocab import RecordStatus
from core.workflows.contacts import log_contact
from tests import factories
from tests.dashboard.conftest import click, sign_in, texts
from tests.factories import actor_for


@pytest.fixture
def clock(monkeypatch):
    """Move the pages' clock (they call core.timeutil.utcnow once per run)."""
    real = core.timeutil.utcnow
    offset = {"delta": timedelta(0)}
    monkeypatch.setattr(core.timeutil, "utcnow", lambda: real() + offset["delta"])
    return offset


def _case(app_db, case_id):  # noqa: ANN001, ANN202
    with app_db.session(write=False) as s:
        return s.get(Case, case_id)


def _errors(at):  # noqa: ANN001, ANN202
    return [e.value for e in at.error]


def _receive_open_items(at, app_db, case_id, kinds=None):  # noqa: ANN001
    with app_db.session(write=False) as s:
        items = s.exec(select(RecordItem).where(
            RecordItem.case_id == case_id,
            RecordItem.status.in_([RecordStatus.NEEDED.value, RecordStatus.REQUESTED.value]),
        ).order_by(RecordItem.id)).all()
    for item in items:
        if kinds and item.kind not in kinds:
            continue
        if item.requirement != "required" and not kinds:
            continue
        at.selectbox(key="rec_item").set_value(item.id)
        click(at, "Mark received")
        at.run()
        assert not _errors(at), _errors(at)


def test_a_case_goes_from_assessment_to_seen_through_the_ui(app_db, make_app, clock):
    app_db.add_user("nina")
    with app_db.session() as s:
        factories.make_specialist(s, name="Dr. Rivera")
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/new_case.py").run()
    today = app_db.now.date()
    at.text_input(key="nc_first").input("Ana")
    at.text_input(key="nc_last").input("Silva")
    at.selectbox(key="nc_dx").set_value("invasive")
    at.date_input(key="nc_biopsy").set_value(today - timedelta(days=10))
    at.multiselect(key="nc_reasons").set_value(["wants_confirmation"])
    at.text_input(key="nc_biopsy_facility").input("Valley Pathology")
    at.text_input(key="nc_imaging_facility").input("City Imaging")
    click(at, "Assess")
    at.run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Candidate"]
    click(at, "Create case")
    at.run()
    assert not at.exception, at.exception
    with app_db.session(write=False) as s:
        case_id = s.exec(select(Case.id)).one()
    assert any(f"Case {case_id}: Ana Silva" in t.value for t in at.title)
    # The app switched pages itself; AppTest keeps requesting the page it was last told
    # to switch to, so follow the app there.
    at.switch_page("pages/case.py")

    click(at, "Start referral")
    at.run()
    assert _case(app_db, case_id).state == "referral", _errors(at)

    click(at, "Choose specialist")
    at.run()
    _receive_open_items(at, app_db, case_id, kinds={"signed_release"})
    click(at, "Request records")
    at.run()
    assert _case(app_db, case_id).state == "records_requested", _errors(at) + texts(at)[-500:]

    click(at, "Request")  # the first open record is requested from its facility
    at.run()
    assert not _errors(at)
    _receive_open_items(at, app_db, case_id)
    click(at, "Records complete")
    at.run()
    assert _case(app_db, case_id).state == "records_received", _errors(at)

    at.date_input(key="sched_date").set_value(today + timedelta(days=7))
    click(at, "Schedule visit")
    at.run()
    assert _case(app_db, case_id).state == "scheduled", _errors(at)

    clock["delta"] = timedelta(days=8)  # a week later the visit has taken place
    at.run()
    at = sign_in(at, "nina")  # the session has long timed out
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    click(at, "Mark seen")
    at.run()
    assert _case(app_db, case_id).state == "seen", _errors(at)

    at.selectbox(key="outcome_dx").set_value("refined")
    at.selectbox(key="outcome_plan").set_value("minor_change")
    at.multiselect(key="outcome_sources").set_value(["pathology"])
    click(at, "Record outcome")
    at.run()
    assert not _errors(at), _errors(at)
    case = _case(app_db, case_id)
    assert (case.outcome_diagnosis, case.outcome_plan) == ("refined", "minor_change")
    with app_db.session(write=False) as s:
        path = s.exec(select(CaseEvent.to_state).where(CaseEvent.case_id == case_id)
                      .order_by(CaseEvent.id)).all()
    assert path == ["assessed", "referral", "records_requested", "records_received",
                    "scheduled", "seen"]


def _one_case(app_db, *, assigned=True, state="assessed", **fields):  # noqa: ANN001, ANN202
    user = app_db.add_user("nina", full_name="Nina Park")
    other = app_db.add_user("omar", full_name="Omar Diaz")
    with app_db.session() as s:
        team = app_db.team(s)
        case = factories.make_case(s, now=app_db.now - timedelta(minutes=5), team=team,
                                   assignee=user if assigned else None, state=state,
                                   second_opinion_reasons="wants_confirmation", **fields)
        return user, other, case.id


def test_a_move_that_is_not_possible_shows_its_unmet_conditions(app_db, make_app):
    _, _, case_id = _one_case(app_db, assigned=False)
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    assert not at.exception
    button = next(b for b in at.button if b.label == "Start referral")
    assert button.disabled
    assert any("no coordinator is assigned" in c.value for c in at.caption)


def test_a_move_refused_on_click_says_why_and_writes_nothing(app_db, make_app):
    with app_db.session() as s:
        spec_id = factories.make_specialist(s).id
    _, _, case_id = _one_case(app_db, state="records_received", specialist_id=spec_id)
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    at.date_input(key="sched_date").set_value(app_db.now.date() - timedelta(days=1))
    click(at, "Schedule visit")
    at.run()
    assert any("the appointment must be in the future" in e for e in _errors(at)), _errors(at)
    assert _case(app_db, case_id).state == "records_received"


def test_a_change_made_meanwhile_by_someone_else_is_not_overwritten(app_db, make_app):
    _, other, case_id = _one_case(app_db)
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    version = _case(app_db, case_id).version
    with app_db.session() as s:  # Omar logs a call while Nina has the page open
        log_contact(s, case_id=case_id, channel="phone", outcome="reached",
                    actor=actor_for(other), now=core.timeutil.utcnow())
    click(at, "Start referral")
    at.run()
    errors = _errors(at)
    assert any(f"Case {case_id} was changed by Omar Diaz at" in e.replace("\\", "")
               and "reload" in e for e in errors), errors
    case = _case(app_db, case_id)
    assert case.state == "assessed" and case.version == version + 1
    # After reloading, the same click goes through.
    click(at, "Reload")
    at.run()
    click(at, "Start referral")
    at.run()
    assert _case(app_db, case_id).state == "referral", _errors(at)


def test_contact_attempt_is_logged_in_two_clicks(app_db, make_app):
    _, _, case_id = _one_case(app_db)
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    at.selectbox(key="contact_channel").set_value("phone")
    click(at, "No answer")
    at.run()
    assert any("Contact attempt logged" in s.value for s in at.success)


def test_search_takes_percent_and_quote_literally(app_db, make_app):
    user = app_db.add_user("nina")
    with app_db.session() as s:
        team = app_db.team(s)
        odd = factories.make_case(s, now=app_db.now, team=team, assignee=user,
                                  patient=factories.make_patient(s, now=app_db.now,
                                                                 first="Mary", last="O'Brien"))
        pct = factories.make_case(s, now=app_db.now, team=team, assignee=user,
                                  patient=factories.make_patient(s, now=app_db.now,
                                                                 first="Zoe", last="100%"))
        factories.make_case(s, now=app_db.now, team=team, assignee=user,
                            patient=factories.make_patient(s, now=app_db.now,
                                                           first="Obrien", last="Mary"))
        odd_id, pct_id = odd.id, pct.id
    at = sign_in(make_app(), "nina")
    at.text_input(key="triage_search").input("o'brien").run()
    assert not at.exception
    assert list(at.dataframe[0].value["Case"]) == [odd_id]
    at.text_input(key="triage_search").input("%").run()
    assert list(at.dataframe[0].value["Case"]) == [pct_id]
    at.text_input(key="triage_search").input("zz_").run()
    assert "Nothing in the queue" in texts(at)
