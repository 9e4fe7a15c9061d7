"""Settings: every one documented in the README (datasette-style), and a bad value stops
start-up with a message that names the variable an operator sets."""

from __future__ import annotations

import re

import pytest

from core.config import PROJECT_ROOT, Settings, SettingsError, load_settings

README = PROJECT_ROOT / "README.md"
ROW = re.compile(r"^\|\s*`(CASEDESK_[A-Z0-9_]+)`\s*\|", re.MULTILINE)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("CASEDESK_"):
            monkeypatch.delenv(name)


def documented() -> set[str]:
    return set(ROW.findall(README.read_text(encoding="utf-8")))


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(field):
    assert f"CASEDESK_{field.upper()}" in documented(), (
        f"CASEDESK_{field.upper()} is missing from the configuration table in README.md"
    )


def test_the_readme_documents_no_setting_that_does_not_exist():
    real = {f"CASEDESK_{f.upper()}" for f in Settings.model_fields}
    assert documented() - real == set()


def test_defaults_load():
    settings = load_settings()
    assert settings.is_sqlite and settings.database_url.endswith("data/casedesk.db")
    assert settings.timezone == "America/New_York"


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("CASEDESK_TIMEZONE", "Mars/Base", "unknown time zone"),
        ("CASEDESK_SCAN_INTERVAL_MINUTES", "0", "greater than or equal to 1"),
        ("CASEDESK_SCAN_INTERVAL_MINUTES", "five", "valid integer"),
        ("CASEDESK_DATABASE_URL", "mysql://x/y", "sqlite:// or postgresql"),
        ("CASEDESK_HOLIDAY_COUNTRY", "XX", "unknown holiday country"),
        ("CASEDESK_PAGE_SIZE", "100000", "less than or equal to 500"),
        ("CASEDESK_DEMO_MODE", "perhaps", "valid boolean"),
    ],
)
def test_a_bad_value_names_the_setting(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert env in str(exc.value)
    assert message in str(exc.value)


def test_patient_clock_thresholds_must_rise(monkeypatch):
    monkeypatch.setenv("CASEDESK_PATIENT_CLOCK_RED_DAYS", "20")  # below amber (30)
    with pytest.raises(SettingsError, match="amber < red < critical"):
        load_settings()


def test_idle_timeout_cannot_outlast_the_absolute_one(monkeypatch):
    monkeypatch.setenv("CASEDESK_SESSION_IDLE_MINUTES", "120")
    monkeypatch.setenv("CASEDESK_SESSION_ABSOLUTE_HOURS", "1")
    with pytest.raises(SettingsError, match="idle timeout"):
        load_settings()


def test_holiday_country_is_normalised(monkeypatch):
    monkeypatch.setenv("CASEDESK_HOLIDAY_COUNTRY", "gb")
    assert load_settings().holiday_country == "GB"


def test_the_readme_shows_the_real_defaults():
    rows = re.findall(r"^\|\s*`(CASEDESK_[A-Z0-9_]+)`\s*\|\s*`([^`]*)`", README.read_text(
        encoding="utf-8"), re.MULTILINE)
    shown = dict(rows)
    for field, info in Settings.model_fields.items():
        if field == "database_url":
            assert shown["CASEDESK_DATABASE_URL"].endswith("/data/casedesk.db")
            continue
        default = info.default
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown[f"CASEDESK_{field.upper()}"] == expected, field
