"""Hostile input found by hand in the browser (QA pass): user text in page titles, dates
the widgets would silently drop, and a page that must not break on 29 February."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

import core.timeutil
from core.vocab import Role
from tests import factories
from tests.dashboard.conftest import click, sign_in, texts


def test_the_case_title_shows_a_hostile_patient_name_literally(app_db, make_app):
    app_db.add_user("nina")
    with app_db.session() as s:
        patient = factories.make_patient(s, now=app_db.now, first="**Bold**",
                                         last="[x](javascript:alert(1))")
        case = factories.make_case(s, now=app_db.now, team=app_db.team(s), patient=patient)
        case_id = case.id
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    title = at.title[0].value
    # Escaped Markdown: shown as typed, never bold and never a link.
    assert "**Bold**" not in title and "](javascript" not in title
    assert r"\*\*Bold\*\*" in title and r"\[x\]\(javascript" in title


def _new_case_form(at):  # noqa: ANN001, ANN202
    at.switch_page("pages/new_case.py")
    at.run()
    at.text_input(key="nc_first").input("Ana")
    at.text_input(key="nc_last").input("Lima")
    at.multiselect(key="nc_reasons").select("wants_confirmation")
    return at


def test_a_biopsy_in_the_future_is_refused_with_a_message_not_dropped(app_db, make_app):
    app_db.add_user("nina")
    at = _new_case_form(sign_in(make_app(), "nina"))
    future = datetime.now(UTC).date() + timedelta(days=30)
    at.date_input(key="nc_biopsy").set_value(future)
    click(at, "Assess")
    at.run()
    # Before: the date picker's max_value made a future date "no date", and the page said
    # "no diagnosing biopsy yet" and offered to record a non-candidate.
    assert "Biopsy date cannot be in the future" in texts(at), texts(at)
    assert "Record non-candidate" not in [b.label for b in at.button]


def test_new_case_page_renders_on_29_february(app_db, make_app, monkeypatch):
    app_db.add_user("nina")
    leap = datetime(2028, 2, 29, 17, 0, tzinfo=UTC)
    monkeypatch.setattr(core.timeutil, "utcnow", lambda: leap)
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/new_case.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.date_input(key="nc_dob").min == date(1918, 2, 28)


def test_a_refused_note_keeps_its_text_and_a_saved_one_empties_the_box(app_db, make_app):
    from sqlmodel import select

    from core.models import Note

    app_db.add_user("nina")
    with app_db.session() as s:
        nina_case = factories.make_case(s, now=app_db.now, team=app_db.team(s))
        case_id = nina_case.id
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    at.text_area(key="note_body").input("N" * 6000)
    click(at, "Add note")
    at.run()
    assert "Note is too long" in texts(at)
    # Before: the form cleared on every submit, so 6,000 typed characters were lost.
    assert at.text_area(key="note_body").value == "N" * 6000
    at.text_area(key="note_body").input("Called the lab")
    click(at, "Add note")
    at.run()
    assert "Note added." in texts(at)
    assert [box.value for box in at.text_area if box.label == "New note"] == [""]
    with app_db.session(write=False) as s:
        assert s.exec(select(Note.body)).all() == ["Called the lab"]


def test_adding_a_coordinator_without_a_team_says_so_without_cli_flags(app_db, make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    at.switch_page("pages/admin_users.py")
    at.run()
    at.text_input(key="au_username").input("newbie")
    at.text_input(key="au_full_name").input("New Bie")
    at.text_input(key="au_password").input("a-strong-pass-123")
    click(at, "Add user")
    at.run()
    errors = [e.value for e in at.error]
    assert any("must belong to a team" in e for e in errors), errors
    # (the message is Markdown-escaped on the page: compare without the backslashes)
    assert not any("--team" in e.replace("\\", "") for e in errors), errors  # no CLI flags


def test_an_sla_limit_out_of_range_is_refused_with_a_message(app_db, make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    at.switch_page("pages/admin_sla.py")
    at.run()
    at.number_input(key="sla_days_referral").set_value(0)
    at.button(key="sla_save_referral").click()
    at.run()
    # Before: the widget's min_value turned 0 red in the browser and Save did nothing.
    assert any("between 1 and" in e.value for e in at.error), [e.value for e in at.error]


def test_a_page_link_opened_signed_out_signs_in_there(app_db, make_app):
    """A bookmark, a case link or a reload (a new session) used to land on the sign-in
    form under a "Page not found" box and then on My day; now that page runs."""
    app_db.add_user("nina")
    with app_db.session() as s:
        case_id = factories.make_case(s, now=app_db.now, team=app_db.team(s)).id
    at = make_app()
    at.switch_page("pages/case.py")
    at.query_params["case"] = str(case_id)
    at.run()
    assert at.text_input(key="login_username")
    sign_in(at, "nina")
    assert at.title[0].value.startswith(f"Case {case_id}:"), [t.value for t in at.title]


@pytest.mark.parametrize("raw", ["9223372036854775808", "²", "٣", "-4", "0", "1e3",
                                 "99999999999999999999"])
def test_a_case_link_that_is_no_case_number_says_so(app_db, make_app, raw):
    # Before: 2**63 raised OverflowError in the driver and "²" a ValueError in int().
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.query_params["case"] = raw
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "That is not a case number." in texts(at)


@pytest.mark.parametrize("typed", ["²", "99999999999999999999", "9223372036854775808"])
def test_the_sidebar_lookup_answers_nonsense_with_no_case(app_db, make_app, typed):
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.run()
    at.text_input(key="case_lookup").input(typed)
    at.button(key="case_lookup_go").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No case with that number or record number in your reach." in texts(at)


def test_the_sidebar_lookup_finds_a_record_number_typed_in_lower_case(app_db, make_app):
    app_db.add_user("nina")
    with app_db.session() as s:
        patient = factories.make_patient(s, now=app_db.now, mrn="QA00000042")
        case_id = factories.make_case(s, now=app_db.now, team=app_db.team(s),
                                      patient=patient).id
    at = sign_in(make_app(), "nina")
    at.switch_page("pages/case.py")
    at.run()
    at.text_input(key="case_lookup").input(" qa00000042 ")
    at.button(key="case_lookup_go").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["case_id"] == case_id
