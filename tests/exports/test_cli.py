"""`casedesk export ...`: the same bytes as core.exports for the same filter, and clear
refusals (exit 1, no traceback, nothing written)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

import core.config
import core.db
from core.analytics import CaseFilter
from core.db import session_scope
from core.exports import ExportKind, ExportRequest, export_to_file
from tests.exports.hostile import seed_hostile
from tests.factories import actor_for


@pytest.fixture
def cli(engine, monkeypatch):
    url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("CASEDESK_DATABASE_URL", url)
    core.config.get_settings.cache_clear()
    core.db._cached_engine.cache_clear()
    from core.cli import app

    def run(*args: str):  # noqa: ANN202
        return CliRunner().invoke(app, ["export", *args])

    yield run
    core.db._cached_engine.cache_clear()
    core.config.get_settings.cache_clear()


@pytest.fixture
def hostile(engine, now):
    with session_scope(engine) as session:
        return seed_hostile(session, now)


def test_cli_and_core_write_the_same_bytes_for_the_same_filter(engine, hostile, now, tmp_path,
                                                                cli):
    start, end = (now - timedelta(days=40)).date(), now.date()
    result = cli("cases", "--out", str(tmp_path / "cli.csv"), "--from", start.isoformat(),
                 "--to", end.isoformat(), "--team", "Team B", "--state", "referral",
                 "--as-user", "root")
    assert result.exit_code == 0, result.output
    assert "rows" in result.output and "sha256" in result.output
    direct = export_to_file(
        engine, actor_for(hostile.admin),
        ExportRequest(ExportKind.CASES, CaseFilter(start=start, end=end,
                                                   team_id=hostile.team_b, state="referral")),
        tmp_path / "core.csv", now=now)
    assert (tmp_path / "cli.csv").read_bytes() == direct.path.read_bytes()


def test_cli_identified_export_needs_a_named_user_and_a_reason(hostile, tmp_path, cli):
    out = tmp_path / "x.csv"
    r = cli("cases", "--out", str(out), "--identified", "--reason", "audit")
    assert r.exit_code == 1 and "--as-user" in r.output
    r = cli("cases", "--out", str(out), "--identified", "--as-user", "mgr_a")
    assert r.exit_code == 1 and "reason" in r.output
    r = cli("events", "--out", str(out), "--as-user", "coord_a")
    assert r.exit_code == 1 and "may not" in r.output
    assert not out.exists()
    r = cli("cases", "--out", str(out), "--identified", "--as-user", "mgr_a", "--reason",
            "tumour board")
    assert r.exit_code == 0, r.output
    assert "identifies patients" in r.output


def test_cli_refuses_bad_filters_and_existing_files(hostile, tmp_path, cli):
    out = tmp_path / "x.csv"
    assert cli("cases", "--out", str(out), "--state", "lost").exit_code == 1
    assert cli("cases", "--out", str(out), "--from", "2026-02-30").exit_code == 1
    assert cli("cases", "--out", str(out), "--team", "Nobody").exit_code == 1
    assert cli("stage-times", "--out", str(out)).exit_code == 0
    r = cli("stage-times", "--out", str(out))
    assert r.exit_code == 1 and "already exists" in r.output
    assert cli("stage-times", "--out", str(out), "--force").exit_code == 0
