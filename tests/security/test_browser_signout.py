"""Sign-out in one browser ends the same user's session in another (real Chromium, two
independent browser contexts = two machines), without the other one reloading: its next
click finds the server-side session gone and shows the sign-in form."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.db import create_db_engine, session_scope
from core.models import AuditEntry, User, UserSession
from tests.e2e import test_browser as e2e
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, _idle

server = e2e.server  # the e2e test's fixture: real server, seeded temp database

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT_MS = 30_000  # first renders take seconds on a busy 2-core machine (FIELD-NOTES.md)


def _sign_in(browser, base):  # noqa: ANN001, ANN202
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(base)
    page.get_by_label("Username").fill("nina")
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="My day")).to_be_visible(timeout=WAIT_MS)
    _idle(page)
    return page


def test_sign_out_in_one_browser_ends_the_session_in_another(server):
    from playwright.sync_api import expect, sync_playwright

    base, _, url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ward_pc = _sign_in(browser, base)
        laptop = _sign_in(browser, base)

        # Control: a click on the laptop keeps working while both are signed in.
        laptop.get_by_role("link", name="My day").click()
        _idle(laptop)
        expect(laptop.get_by_role("heading", name="My day")).to_be_visible(timeout=WAIT_MS)

        ward_pc.get_by_role("button", name="Sign out").click()
        expect(ward_pc.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)

        # The laptop has not reloaded; its next click meets the ended session.
        laptop.get_by_role("link", name="My day").click()
        expect(laptop.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
        expect(laptop.get_by_text("Your session has ended")).to_be_visible(timeout=WAIT_MS)
        expect(laptop.get_by_role("heading", name="My day")).to_have_count(0, timeout=WAIT_MS)
        browser.close()

    engine = create_db_engine(url)
    with session_scope(engine, write=False) as s:
        nina = s.exec(select(User).where(User.username == "nina")).one()
        rows = s.exec(select(UserSession).where(UserSession.user_id == nina.id)).all()
        actions = [a for a in s.exec(select(AuditEntry.action)
                                     .where(AuditEntry.user_id == nina.id)).all()]
    engine.dispose()
    assert len(rows) == 2 and all(r.ended_at is not None for r in rows)
    assert sorted(r.end_reason for r in rows) == ["signed_out", "signed_out_elsewhere"]
    assert actions.count("login") == 2 and "logout" in actions
