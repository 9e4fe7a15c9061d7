"""The admin audit viewer: filters work, user text shows literally, nothing to download,
the view is audited, other roles are refused and the refusal is audited."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core import audit
from core.db import session_scope
from core.models import AuditEntry
from core.vocab import Role
from tests.dashboard.conftest import ROOT, sign_in, texts
from tests.factories import actor_for

PAGE = "pages/audit_log.py"
HOSTILE = "<img src=x onerror=alert(1)> [click](http://evil.example) **bold**"


def _open_page(app_db, make_app, role=Role.ADMIN):
    app_db.add_user("root", role=role)
    at = sign_in(make_app(), "root")
    at.switch_page(PAGE)
    return at.run()


def _actions(app_db, action):
    with app_db.session(write=False) as s:
        return s.exec(select(AuditEntry).where(AuditEntry.action == action)).all()


def test_an_admin_sees_the_log_with_user_text_shown_literally(app_db, make_app):
    with session_scope(app_db.engine) as s:
        audit.record(s, actor=None, action="case.note", now=app_db.now, case_id=42,
                     detail={"note": HOSTILE})
    at = _open_page(app_db, make_app)
    assert not at.exception
    table = at.dataframe[0].value
    assert "case.note" in set(table["action"]) and "login" in set(table["action"])
    detail = next(d for d in table["detail"] if "onerror" in d)
    assert json.loads(detail)["note"] == HOSTILE  # the exact text, as text
    # Nothing renders it as Markdown or HTML (st.table would: its cells are Markdown),
    # and there is nothing to download: the table's own export is off for every table.
    assert "onerror" not in texts(at) and "evil.example" not in texts(at)
    assert not at.get("table")
    assert not at.get("download_button")


def test_filters_narrow_the_rows_and_each_view_is_audited_once(app_db, make_app):
    at = _open_page(app_db, make_app)
    at.selectbox(key="al_action").select("login")
    at.run()
    assert set(at.dataframe[0].value["action"]) == {"login"}
    at.run()  # a redraw of the same view is not a new view
    views = _actions(app_db, "audit.view")
    assert [json.loads(v.detail)["filter"].get("action") for v in views] == [None, "login"]
    at.selectbox(key="al_outcome").select("denied")
    at.run()
    assert any("No audit entries match" in i.value for i in at.info)


def test_the_verify_button_checks_the_chain(app_db, make_app):
    at = _open_page(app_db, make_app)
    at.button(key="al_verify").click()
    at.run()
    assert any("Audit chain OK" in s.value for s in at.success)


@pytest.mark.parametrize("role", [Role.COORDINATOR, Role.MANAGER])
def test_other_roles_are_not_offered_the_page_and_are_refused_and_audited(app_db, role):
    user = app_db.add_user("nina", role=role)
    at = sign_in(AppTest.from_file(str(ROOT / "dashboard/app.py"), default_timeout=30), "nina")
    with pytest.raises(ValueError):
        at.switch_page(PAGE)
    direct = AppTest.from_file(str(ROOT / "dashboard" / PAGE), default_timeout=30)
    direct.session_state["auth_token"] = at.session_state["auth_token"]
    direct.run()
    assert any("may not use this page" in e.value for e in direct.error)
    assert not direct.get("table")
    denied = _actions(app_db, "access.denied")
    assert [(d.user_id, d.outcome) for d in denied] == [(user.id, "denied")]
    # The core query refuses too, whoever calls it.
    from core.errors import PermissionDenied
    from core.queries.audit_log import AuditFilter, search_audit

    with pytest.raises(PermissionDenied), session_scope(app_db.engine) as s:
        search_audit(s, actor=actor_for(user), now=app_db.now, filters=AuditFilter())
    assert len(_actions(app_db, "access.denied")) == 2


def test_a_detail_too_long_is_kept_as_valid_json_and_the_page_still_shows(app_db, make_app):
    # ~400 control characters escape to 2,400 characters of JSON: cut as text, the row
    # would no longer parse and every view of it would fail.
    reason = "\x01" * 400 + " the end"
    with session_scope(app_db.engine) as s:
        audit.record(s, actor=None, action="export.identified", now=app_db.now,
                     detail={"reason": reason})
    stored = _actions(app_db, "export.identified")[0].detail
    assert len(stored) <= audit.DETAIL_MAX
    assert json.loads(stored)["truncated"].startswith('{"reason": "\\u0001')
    at = _open_page(app_db, make_app)
    assert not at.exception
    assert any("truncated" in d for d in at.dataframe[0].value["detail"])


def test_a_stored_detail_that_is_not_json_is_shown_not_fatal(app_db, make_app,
                                                             monkeypatch):
    # A row as the old cut wrote it (JSON text cut and "…" added); the log cannot be
    # edited, so the reader must cope with it.
    with monkeypatch.context() as patched:  # not .undo(): app_db's patches must stay
        patched.setattr(audit, "detail_json", lambda detail: '{"note": "cut…')
        with session_scope(app_db.engine) as s:
            audit.record(s, actor=None, action="case.note", now=app_db.now, case_id=7,
                         detail={"note": "x"})
    at = _open_page(app_db, make_app)
    assert not at.exception
    assert any("unparsed" in d for d in at.dataframe[0].value["detail"])


@pytest.mark.parametrize("entries, older", [(100, False), (101, True)])
def test_older_is_offered_only_when_there_is_an_older_entry(app_db, make_app, entries, older):
    with session_scope(app_db.engine) as s:
        for n in range(entries):
            audit.record(s, actor=None, action="case.note", now=app_db.now, case_id=n + 1)
    at = _open_page(app_db, make_app)
    at.selectbox(key="al_action").select("case.note")
    at.run()
    assert len(at.dataframe[0].value) == 100
    assert any(b.key == "al_older" for b in at.button) is older
    # the view's audit row counts the rows shown, not the one read ahead
    last_view = _actions(app_db, "audit.view")[-1]
    assert json.loads(last_view.detail)["rows"] == 100
