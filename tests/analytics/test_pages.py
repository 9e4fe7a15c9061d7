"""The analytics and export pages through the real entry script (AppTest): each renders
for a manager, is refused to a coordinator, and the Exports page writes the same bytes as
`casedesk export` for the same filter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from core.models import AuditEntry, Case, Team
from core.vocab import Role
from tests.analytics.dataset import seed
from tests.dashboard.conftest import ROOT, click, sign_in, texts

ANALYTICS_PAGES = {
    "pages/insight_flow.py": "Funnel and pipeline",
    "pages/insight_stage_times.py": "Stage times",
    "pages/insight_workload.py": "Workload",
    "pages/insight_outcomes.py": "Outcomes and time to opinion",
}
ALL_PAGES = {**ANALYTICS_PAGES, "pages/exports.py": "Exports"}


@pytest.fixture
def world(app_db):
    with app_db.session() as session:
        data = seed(session, app_db.now)
        north = session.get(Team, data.teams["North"])
        session.expunge(north)
    app_db.add_user("boss", role=Role.MANAGER, team=north)
    app_db.add_user("nurse", role=Role.COORDINATOR, team=north)
    app_db.add_user("root", role=Role.ADMIN)
    return data


@pytest.mark.parametrize("path", list(ALL_PAGES))
def test_each_page_renders_for_a_manager(app_db, make_app, world, path):
    at = sign_in(make_app(), "boss")
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    assert ALL_PAGES[path] in [t.value for t in at.title]
    if path in ANALYTICS_PAGES:
        assert at.get("plotly_chart"), "the page draws its charts"


@pytest.mark.parametrize("path", list(ANALYTICS_PAGES))
def test_each_analytics_page_renders_for_an_admin_across_teams(app_db, make_app, world, path):
    at = sign_in(make_app(), "root")
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox  # the admin picks a team (or all)


@pytest.mark.parametrize("path", list(ALL_PAGES))
def test_each_page_is_refused_to_a_coordinator(app_db, make_app, world, path):
    at = sign_in(make_app(), "nurse")
    token = at.session_state["auth_token"]
    with pytest.raises(ValueError):
        at.switch_page(path)  # not offered in the coordinator's navigation
    direct = AppTest.from_file(str(ROOT / "dashboard" / path), default_timeout=30)
    direct.session_state["auth_token"] = token
    direct.run()
    assert not direct.exception
    assert any("may not use this page" in e.value for e in direct.error)
    assert not direct.get("plotly_chart")
    with app_db.session(write=False) as s:
        denied = s.exec(select(AuditEntry).where(AuditEntry.action == "access.denied")).all()
    assert len(denied) == 1


def test_tables_do_not_offer_their_own_download():
    # st.dataframe's CSV download would bypass the audited export (.streamlit/config.toml).
    st_config.get_config_options(force_reparse=True)
    assert st_config.get_option("client.disableDataExport") is True


def test_funnel_page_shows_the_cohort_the_core_counts(app_db, make_app, world):
    at = sign_in(make_app(), "boss")
    at.switch_page("pages/insight_flow.py")
    at.run()
    start = (app_db.now - timedelta(days=60)).date()
    end = app_db.now.date()  # UTC days, also in the evening west of UTC
    at.date_input(key="flow_period").set_value((start, end)).run()
    assert not at.exception
    want = sum(1 for s in world.specs
               if s.team == "North" and start <= s.assessed_at.date() <= end)
    assert at.metric[0].value == f"{want:,}"
    table = at.dataframe[0].value
    # the first step has nothing before it: a dash, never "None"
    assert table["conversion"].iloc[0] == "—"
    assert table["conversion"].iloc[1:].str.endswith("%").all()


def test_workload_page_reassigns_the_selected_cases(app_db, make_app, world):
    at = sign_in(make_app(), "boss")
    at.switch_page("pages/insight_workload.py")
    at.run()
    at.selectbox(key="reassign_from").set_value("none").run()
    n2 = world.users["n2"].id
    at.selectbox(key="reassign_to").set_value(n2).run()
    _select(at, "reassign_table_none_0", [0, 1])
    assert not at.exception, at.exception
    click(at, "Reassign 2 cases")
    at.run()
    assert not at.exception, at.exception
    assert "2 cases reassigned." in texts(at)
    with app_db.session(write=False) as s:
        moved = s.exec(select(Case).where(Case.assignee_id == n2)).all()
        audited = s.exec(select(AuditEntry).where(AuditEntry.user_id.is_not(None),
                                                  AuditEntry.case_id.is_not(None))).all()
    north_unassigned_before = [sp for sp in world.specs
                               if sp.team == "North" and sp.coordinator == "n2"]
    assert len(moved) == len(north_unassigned_before) + 2
    assert len(audited) >= 2
    # the next round starts with nothing selected, not the old rows on new cases
    assert any(b.label == "Reassign 0 cases" and b.disabled for b in at.button)


def _select(at, key, rows):  # noqa: ANN001, ANN202
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_workload_rows_picked_for_one_holder_do_not_crash_another(app_db, make_app, world):
    at = sign_in(make_app(), "boss")
    at.switch_page("pages/insight_workload.py")
    at.run()
    _select(at, "reassign_table_all_0", [150, 160, 170])
    at.selectbox(key="reassign_from").set_value("none").run()
    assert not at.exception, at.exception
    assert any(b.label == "Reassign 0 cases" for b in at.button)


def test_workload_a_case_changed_after_it_was_shown_is_refused_not_swapped(
        app_db, make_app, world):
    from core.workflows.case_ops import bulk_reassign

    at = sign_in(make_app(), "boss")
    at.switch_page("pages/insight_workload.py")
    at.run()
    at.selectbox(key="reassign_from").set_value("none").run()
    at.selectbox(key="reassign_to").set_value(world.users["n2"].id).run()
    first = int(at.dataframe[-1].value["case_id"].iloc[0])
    with app_db.session(write=False) as s:
        before = {c.id: c.assignee_id for c in s.exec(select(Case))}
    # another manager takes the first case between the table being shown and the pick
    with app_db.session() as s:
        done = bulk_reassign(s, case_ids=[first], assignee_id=world.users["n1"].id,
                             actor=world.actor("north_manager"), now=app_db.now)
    assert done[0].ok
    _select(at, "reassign_table_none_0", [0])
    click(at, "Reassign 1 cases")
    at.run()
    assert not at.exception, at.exception
    assert "0 cases reassigned." in texts(at)
    with app_db.session(write=False) as s:
        after = {c.id: c.assignee_id for c in s.exec(select(Case))}
    changed = {cid for cid in after if after[cid] != before[cid]}
    assert changed == {first}  # only the other user's change: nothing swapped in


def test_exports_page_writes_the_same_bytes_as_the_cli(app_db, make_app, world, tmp_path):
    start = (app_db.now - timedelta(days=60)).date()
    end = (app_db.now - timedelta(days=3)).date()
    at = sign_in(make_app(), "boss")
    at.switch_page("pages/exports.py")
    at.run()
    at.radio(key="export_kind").set_value(at.radio(key="export_kind").options[1])
    at.run()
    at.date_input(key="export_period").set_value((start, end)).run()
    click(at, "Prepare export")
    at.run()
    assert not at.exception, at.exception
    ready = at.session_state["export_ready"]
    page_bytes = open(ready["path"], "rb").read()

    from core.cli import app

    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(app, ["export", "events", "--out", str(out), "--from",
                                      start.isoformat(), "--to", end.isoformat(),
                                      "--as-user", "boss"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == page_bytes
    assert ready["rows"] > 0 and ready["sha256"] in texts(at)
    with app_db.session(write=False) as s:
        exports = s.exec(select(AuditEntry).where(AuditEntry.action == "export.events")).all()
    assert len(exports) == 2  # the page's and the CLI's, both audited


def test_identified_export_on_the_page_needs_a_reason(app_db, make_app, world):
    at = sign_in(make_app(), "boss")
    at.switch_page("pages/exports.py")
    at.run()
    at.toggle(key="export_identified").set_value(True).run()
    click(at, "Prepare export")
    at.run()
    assert not at.exception
    assert any("reason" in e.value for e in at.error)
    assert "export_ready" not in at.session_state
