"""The command line's exit codes and messages on bad input, against a temp SQLite file.

0 success, 1 refused (a message for a person), 2 usage or configuration error (the
message names the option or the CASEDESK_ setting).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.cli.run import _command_names, supervise
from core.config import get_settings

runner = CliRunner()
PASSWORD = "correct horse battery\n"


@pytest.fixture(autouse=True)
def database(tmp_path, monkeypatch):
    """Each test: its own database file and freshly read settings."""
    monkeypatch.setenv("CASEDESK_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    for name in list(os.environ):
        if name.startswith("CASEDESK_") and name != "CASEDESK_DATABASE_URL":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_unknown_command_exits_2():
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command" in result.output


@pytest.mark.parametrize("cases", ["-5", "0", "99999999"])
def test_demo_refuses_bad_sizes_with_exit_2(cases):
    result = invoke("demo", "--cases", cases)
    assert result.exit_code == 2
    assert "--cases" in result.output


def test_demo_seeds_once_then_refuses_a_database_with_cases():
    first = invoke("demo", "--cases", "40", "--seed", "1", "--now", "2026-11-25T00:00:00Z")
    assert first.exit_code == 0, first.output
    assert "Demo data: 40 cases" in first.output
    assert "40 / 40 cases" in first.output  # progress, a line per chunk off a terminal
    again = invoke("demo", "--cases", "40")
    assert again.exit_code == 1
    assert "already holds 40 cases" in again.output


def test_demo_refuses_a_bad_reference_time():
    result = invoke("demo", "--cases", "5", "--now", "yesterday-ish")
    assert result.exit_code == 2
    assert "--now" in result.output


def _add(username="ana.silva", *extra: str, password: str = PASSWORD):
    invoke("init")
    return invoke("user", "add", username, "--full-name", "Ana Silva", "--role",
                  "coordinator", "--team", "Breast North", "--create-team",
                  "--password-stdin", *extra, input=password)


def test_user_add_list_disable():
    added = _add()
    assert added.exit_code == 0, added.output
    assert "Added coordinator ana.silva" in added.output
    listed = invoke("user", "list")
    assert listed.exit_code == 0
    assert "ana.silva" in listed.output and "Breast North" in listed.output
    disabled = invoke("user", "disable", "ana.silva")
    assert disabled.exit_code == 0
    assert "disabled" in invoke("user", "list").output


def test_user_add_refuses_a_weak_password():
    result = _add(password="short\n")
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output


def test_user_commands_need_an_initialised_database():
    result = invoke("user", "list")
    assert result.exit_code == 1
    assert "casedesk init" in result.output


def test_user_add_prompts_hidden_and_confirms():
    invoke("init")
    result = invoke("user", "add", "bo", "--full-name", "Bo", "--role", "admin",
                    input="correct horse battery\ncorrect horse battery\n")
    assert result.exit_code == 0, result.output
    assert "correct horse" not in result.output  # hidden input is not echoed


def test_user_add_has_no_password_argument():
    result = invoke("user", "add", "bo", "--full-name", "Bo", "--role", "admin",
                    "--password", "correct horse battery")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_duplicate_user_is_refused():
    assert _add().exit_code == 0
    result = _add()
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_unknown_role_is_a_usage_error():
    result = invoke("user", "add", "bo", "--full-name", "Bo", "--role", "nurse",
                    "--password-stdin", input=PASSWORD)
    assert result.exit_code == 2
    assert "--role" in result.output


def test_disable_unknown_user():
    invoke("init")
    result = invoke("user", "disable", "ghost")
    assert result.exit_code == 1
    assert "No user named 'ghost'" in result.output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CASEDESK_SCAN_INTERVAL_MINUTES", "0"),
        ("CASEDESK_TIMEZONE", "Mars/Base"),
        ("CASEDESK_DATABASE_URL", "mysql://nope"),
        ("CASEDESK_LOCKOUT_THRESHOLD", "many"),
    ],
)
def test_bad_setting_exits_2_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = invoke("user", "list")
    assert result.exit_code == 2
    assert name in result.output


def test_run_refuses_demo_mode_on_postgresql(monkeypatch):
    monkeypatch.setenv("CASEDESK_DATABASE_URL", "postgresql://casedesk@db.example/casedesk")
    get_settings.cache_clear()
    result = invoke("run", "--demo")
    assert result.exit_code == 2
    assert "PostgreSQL" in result.output and "--force-demo-on-postgresql" in result.output


def test_run_knows_which_commands_are_installed():
    names = _command_names(app)
    assert {"init", "demo", "run"} <= names
    assert "user" not in names  # a group, not a command


def _sleeper(seconds: float, code: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c",
                             f"import time, sys; time.sleep({seconds}); sys.exit({code})"])


def test_run_stops_everything_when_a_child_dies():
    steady, dying = _sleeper(60), _sleeper(0.2, code=3)
    started = time.monotonic()
    assert supervise({"worker": steady, "dashboard": dying}) == 1
    assert steady.poll() is not None, "the other child is stopped too"
    assert time.monotonic() - started < 15


def test_run_forwards_sigterm_and_exits_0():
    a, b = _sleeper(60), _sleeper(60)
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    assert supervise({"worker": a, "dashboard": b}) == 0
    assert a.poll() is not None and b.poll() is not None
