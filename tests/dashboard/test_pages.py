"""Every page renders for each role allowed to use it; My day shows the queue in order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.models import CaseFlag
from core.permissions import can
from core.vocab import Role
from dashboard import nav
from tests import factories
from tests.dashboard.conftest import click, sign_in, texts
from tests.factories import actor_for


def _seed(app_db, coordinator_name="nina"):  # noqa: ANN001, ANN202
    """A coordinator with three open cases of different urgency, in one team."""
    user = app_db.add_user(coordinator_name)
    now = app_db.now
    with app_db.session() as s:
        team = app_db.team(s)
        calm = factories.make_case(s, now=now, team=team, assignee=user, state="referral",
                                   days_in_state=1)
        late = factories.make_case(s, now=now, team=team, assignee=user,
                                   state="records_requested", days_in_state=12)
        factories.make_record(s, case=late, now=now, status="requested",
                              requested_at=now - timedelta(days=12))
        urgent = factories.make_case(s, now=now, team=team, assignee=user, state="referral",
                                     days_in_state=2)
        s.add(CaseFlag(case_id=urgent.id, kind="patient_clock", severity="escalated",
                       state="referral", raised_at=now))
        urgent.flag_rank = 3  # as the scan keeps it (the queue reads the stored rank)
        ids = {"calm": calm.id, "late": late.id, "urgent": urgent.id}
    return user, ids


@pytest.mark.parametrize("role", list(Role))
def test_every_offered_page_renders_for_the_role(app_db, make_app, role):
    _, ids = _seed(app_db)
    user = app_db.add_user("someone", role=role)
    at = sign_in(make_app(), "someone")
    assert not at.exception
    for spec in nav.pages_for(actor_for(user)):
        at.switch_page(spec.path)
        if spec.path == "pages/case.py":
            at.query_params["case"] = str(ids["late"])
        at.run()
        assert not at.exception, (spec.path, at.exception)
        assert not at.error, (spec.path, [e.value for e in at.error])
    assert {s.path for s in nav.pages_for(actor_for(user))} == {
        s.path for s in nav.PAGES if can(actor_for(user), s.action)}


def test_my_day_lists_the_queue_most_urgent_first_with_why(app_db, make_app):
    _, ids = _seed(app_db)
    at = sign_in(make_app(), "nina")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Case"]) == [ids["urgent"], ids["late"], ids["calm"]]
    why = dict(zip(table["Case"], table["Why"], strict=True))
    assert why[ids["late"]] == ("Records requested 12 days, limit 10 - glass slides from "
                                "Valley Pathology not received")
    nxt = dict(zip(table["Case"], table["Next action"], strict=True))
    assert nxt[ids["late"]] == "Chase Valley Pathology for the glass slides"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["My open cases"] == "3"


def test_open_case_goes_from_the_queue_to_the_case_page(app_db, make_app):
    _, ids = _seed(app_db)
    at = sign_in(make_app(), "nina")
    click(at, "Open case")  # the first choice is the most urgent case
    at.run()
    assert not at.exception
    assert any(f"Case {ids['urgent']}:" in t.value for t in at.title), texts(at)
