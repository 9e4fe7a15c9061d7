"""One Settings object for every process, read from CASEDESK_* environment variables.

A bad value stops start-up with a message naming the setting (see `load_settings`).
Every field here is documented in README.md; tests/test_config.py fails when one is not.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "casedesk.db"


class SettingsError(RuntimeError):
    """Raised when the environment holds a value Case Desk cannot start with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASEDESK_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    timezone: str = Field(
        default="America/New_York",
        description="Time zone used to show dates and to decide what 'today' is",
    )
    scan_interval_minutes: int = Field(
        default=5, ge=1, le=1440, description="Minutes between stalled-case scans"
    )
    scan_misfire_grace_seconds: int = Field(
        default=300, ge=1, description="How late a scan may start and still run"
    )
    worker_lease_seconds: int = Field(
        default=60, ge=5, le=3600,
        description="SQLite leader lease length; a standby takes over after it lapses",
    )
    session_idle_minutes: int = Field(
        default=15, ge=1, le=24 * 60, description="Sign out after this much inactivity"
    )
    session_absolute_hours: int = Field(
        default=12, ge=1, le=7 * 24, description="Sign out this long after sign-in, however busy"
    )
    lockout_threshold: int = Field(
        default=5, ge=1, le=100, description="Failed sign-ins in a row that lock an account"
    )
    lockout_minutes: int = Field(
        default=15, ge=1, le=7 * 24 * 60, description="How long a locked account stays locked"
    )
    holiday_country: str = Field(
        default="US", description="Country whose public holidays business-day clocks skip"
    )
    patient_clock_amber_days: int = Field(default=30, ge=1, description="Patient clock amber")
    patient_clock_red_days: int = Field(default=45, ge=1, description="Patient clock red")
    patient_clock_critical_days: int = Field(
        default=60, ge=1, description="Patient clock critical"
    )
    unreachable_attempts: int = Field(
        default=3, ge=1, le=20, description="Failed contact attempts in a row that flag a case"
    )
    demo_mode: bool = Field(
        default=False, description="Seed demo data and demo accounts (never in production)"
    )
    oidc_enabled: bool = Field(
        default=False,
        description="Offer single sign-on through st.login (configure [auth] in secrets.toml)",
    )
    page_size: int = Field(default=50, ge=5, le=500, description="Rows per page of the queue")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql")):
            raise ValueError("must start with sqlite:// or postgresql")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("holiday_country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        import holidays

        # country_holidays imports only that country's module; listing every supported
        # country would import all of them (about a second on every process start).
        try:
            holidays.country_holidays(value.upper(), years=2026)
        except NotImplementedError:
            raise ValueError(f"unknown holiday country {value!r}") from None
        return value.upper()

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Settings:
        if not (
            self.patient_clock_amber_days
            < self.patient_clock_red_days
            < self.patient_clock_critical_days
        ):
            raise ValueError("patient clock thresholds must rise: amber < red < critical")
        if self.session_idle_minutes > self.session_absolute_hours * 60:
            raise ValueError("session idle timeout cannot be longer than the absolute timeout")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


def describe_error(exc: ValidationError) -> str:
    """Turn pydantic's error into one line per bad setting, named as the operator sets it."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) if err["loc"] else "settings"
        env = f"CASEDESK_{field.upper()}" if err["loc"] else "CASEDESK_* settings"
        lines.append(f"{env}: {err['msg']}")
    return "Invalid configuration:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
