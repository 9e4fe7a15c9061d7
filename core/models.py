"""The whole data model (DESIGN.md section 2).

Rules that hold for every table:
- explicit table names (`case` is a reserved word, so the table is `cases`);
- datetimes are timezone-aware UTC (sqlmodel 0.0.50 refuses naive ones);
- every enumerated column carries a CHECK constraint built from `core.vocab`;
- text columns have a length limit (enforced by PostgreSQL; on SQLite the same limits are
  checked in `core.validation` before anything reaches the database).

Identity and contact details live in `patient`, apart from the case, so that a
de-identified export simply never joins that table.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Column,
    ColumnElement,
    Index,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlmodel import Field, SQLModel

from core.vocab import (
    AppointmentMode,
    AuditOutcome,
    CaseState,
    CloseReason,
    ContactChannel,
    ContactOutcome,
    DiagnosisCategory,
    FlagKind,
    FlagSeverity,
    JobStatus,
    OutcomeDiagnosis,
    OutcomePlan,
    Priority,
    RecordKind,
    RecordStatus,
    ReferralStatus,
    Requirement,
    Role,
    TreatmentStatus,
)

# Text limits, shared with core.validation so the message and the column agree.
NAME_MAX = 120
SHORT_MAX = 120
REASON_MAX = 500
NOTE_MAX = 5000
DETAIL_MAX = 2000


def check_in(column: str, enum: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """CHECK (column IN (...)) from an enum; the constraint name says which column."""
    values = ", ".join(f"'{m.value}'" for m in enum)
    condition = f"{column} IN ({values})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=f"ck_{column}_valid")


# --- people -----------------------------------------------------------------------------


class Team(SQLModel, table=True):
    __tablename__ = "team"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=NAME_MAX, unique=True)
    created_at: datetime


class UserBase(SQLModel):
    username: str = Field(max_length=64, unique=True)
    full_name: str = Field(max_length=NAME_MAX)
    email: str | None = Field(default=None, max_length=254, unique=True)
    role: str = Field(max_length=16)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)


class User(UserBase, table=True):
    __tablename__ = "app_user"
    __table_args__ = (
        check_in("role", Role),
        # Coordinators and managers work inside a team; only admins may have none.
        CheckConstraint("role = 'admin' OR team_id IS NOT NULL", name="ck_user_team_required"),
    )

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str | None = Field(default=None, max_length=255)
    is_active: bool = Field(default=True)
    failed_logins: int = Field(default=0)
    locked_until: datetime | None = Field(default=None)
    password_changed_at: datetime | None = Field(default=None)
    last_login_at: datetime | None = Field(default=None)
    created_at: datetime


class UserSession(SQLModel, table=True):
    """Server-side session: the browser holds only a random token; we store its hash."""

    __tablename__ = "user_session"

    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the token
    user_id: int = Field(foreign_key="app_user.id", index=True)
    created_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None = Field(default=None)
    end_reason: str | None = Field(default=None, max_length=32)


# --- patients, specialists, cases -------------------------------------------------------


class Patient(SQLModel, table=True):
    """Identity and contact details. Never joined by a de-identified export."""

    __tablename__ = "patient"

    id: int | None = Field(default=None, primary_key=True)
    mrn: str = Field(max_length=32, unique=True)  # the service's record number
    first_name: str = Field(max_length=NAME_MAX)
    last_name: str = Field(max_length=NAME_MAX, index=True)
    # Normalised (NFC, casefolded) "first last" for search; kept in step on every write.
    search_name: str = Field(max_length=2 * NAME_MAX + 1, index=True)
    date_of_birth: date | None = None
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)
    address_line: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=NAME_MAX)
    region: str | None = Field(default=None, max_length=64)
    zip_code: str | None = Field(default=None, max_length=16)
    created_at: datetime


class Specialist(SQLModel, table=True):
    __tablename__ = "specialist"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=NAME_MAX)
    specialty: str = Field(max_length=SHORT_MAX)
    institution: str = Field(max_length=SHORT_MAX)
    telehealth: bool = Field(default=True)
    is_active: bool = Field(default=True)


class Case(SQLModel, table=True):
    __tablename__ = "cases"
    __table_args__ = (
        check_in("state", CaseState),
        check_in("priority", Priority),
        check_in("diagnosis_category", DiagnosisCategory),
        check_in("treatment_status", TreatmentStatus),
        check_in("referral_status", ReferralStatus),
        check_in("appointment_mode", AppointmentMode, nullable=True),
        check_in("outcome_diagnosis", OutcomeDiagnosis, nullable=True),
        check_in("outcome_plan", OutcomePlan, nullable=True),
        check_in("close_reason", CloseReason, nullable=True),
        check_in("closed_from_state", CaseState, nullable=True),
        CheckConstraint("version >= 1", name="ck_case_version_positive"),
        CheckConstraint(
            "(state = 'closed') = (close_reason IS NOT NULL)", name="ck_case_closed_has_reason"
        ),
        Index("ix_cases_team_state", "team_id", "state"),
        Index("ix_cases_assignee_state", "assignee_id", "state"),
        # The triage queue (core/queries/triage.py, migrations 0006 and 0009): every
        # column of its sort key (rank from flag_rank, the deadlines and the patient clock
        # - biopsy date, outcome recorded -, deadline, biopsy date, id), of its scope, of
        # its state filter and of the headline's counts, so a scope's open cases are
        # ranked, sorted and counted from this index alone and only one page of wide case
        # rows is read.
        Index("ix_cases_triage", "team_id", "assignee_id", "flag_rank", "escalate_at",
              "due_at", "due_soon_at", "biopsy_date", "outcome_recorded_at", "state",
              "appointment_at", "id",
              sqlite_where=text("state <> 'closed'"),
              postgresql_where=text("state <> 'closed'")),
        # The funnel: a team's cohort (by assessment time) counted by furthest stage,
        # read from the index alone.
        Index("ix_cases_team_assessed_furthest", "team_id", "assessed_at", "furthest_rank"),
        # ... and without a period, one index range per stage (migration 0007).
        Index("ix_cases_team_furthest", "team_id", "furthest_rank"),
        # The stalled-case scan (core/scan): narrow covering indexes over the open cases
        # each flag kind looks at, so counting and raising read a few MB of index instead
        # of every wide case row (measured at 100k cases: 155 ms -> 14 ms per count).
        Index("ix_cases_scan_sla", "due_soon_at", "due_at", "escalate_at", "on_hold", "state",
              sqlite_where=text("state <> 'closed' AND due_soon_at IS NOT NULL"),
              postgresql_where=text("state <> 'closed' AND due_soon_at IS NOT NULL")),
        Index("ix_cases_scan_patient", "biopsy_date", "state", "outcome_recorded_at",
              sqlite_where=text("state <> 'closed' AND outcome_recorded_at IS NULL"
                                " AND biopsy_date IS NOT NULL"),
              postgresql_where=text("state <> 'closed' AND outcome_recorded_at IS NULL"
                                    " AND biopsy_date IS NOT NULL")),
        Index("ix_cases_scan_risk", "planned_treatment_start", "state", "treatment_status",
              "outcome_recorded_at",
              sqlite_where=text("state <> 'closed' AND outcome_recorded_at IS NULL"
                                " AND planned_treatment_start IS NOT NULL"),
              postgresql_where=text("state <> 'closed' AND outcome_recorded_at IS NULL"
                                    " AND planned_treatment_start IS NOT NULL")),
        # The incremental scan (core/scan/sweep.py): the cases written since the last
        # scan.
        Index("ix_cases_scan_dirty", "id", sqlite_where=text("scan_dirty = 1"),
              postgresql_where=text("scan_dirty")),
        # Every index here is rewritten by the moves that change its columns: one that no
        # query reads any more goes (migration 0010 dropped ix_cases_open_due and
        # ix_cases_scan_escalate).
    )

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    team_id: int = Field(foreign_key="team.id")
    assignee_id: int | None = Field(default=None, foreign_key="app_user.id")
    state: str = Field(default=CaseState.ASSESSED.value, max_length=24)
    version: int = Field(default=1)
    priority: str = Field(default=Priority.ROUTINE.value, max_length=16)

    # candidacy assessment (intake)
    cancer_type: str = Field(default="breast", max_length=32)
    diagnosis_category: str = Field(max_length=16)
    biopsy_date: date | None = Field(default=None, index=True)
    treatment_status: str = Field(default=TreatmentStatus.NONE.value, max_length=24)
    planned_treatment_start: date | None = None
    second_opinion_reasons: str = Field(default="", max_length=REASON_MAX)  # comma list
    biopsy_facility: str | None = Field(default=None, max_length=SHORT_MAX)
    imaging_facility: str | None = Field(default=None, max_length=SHORT_MAX)
    telehealth_preferred: bool = Field(default=False)
    candidacy_reasons: str = Field(default="", max_length=DETAIL_MAX)
    assessed_at: datetime = Field(index=True)

    # insurance and referral
    insurer: str | None = Field(default=None, max_length=SHORT_MAX)
    insurance_member_id: str | None = Field(default=None, max_length=64)
    referral_required: bool = Field(default=False)
    referral_status: str = Field(default=ReferralStatus.NOT_REQUIRED.value, max_length=16)
    authorization_number: str | None = Field(default=None, max_length=64)

    # specialist and visit
    specialist_id: int | None = Field(default=None, foreign_key="specialist.id")
    appointment_at: datetime | None = None
    appointment_mode: str | None = Field(default=None, max_length=16)
    no_show_count: int = Field(default=0)

    # hold: the SLA clock pauses while a third party holds the case up
    on_hold: bool = Field(default=False)
    hold_reason: str | None = Field(default=None, max_length=REASON_MAX)
    hold_started_at: datetime | None = None
    hold_until: date | None = None
    # seconds the case has spent on hold since it entered its current state
    paused_seconds: int = Field(default=0)

    # clocks: recomputed by core.workflows on every write that affects them
    state_entered_at: datetime
    due_soon_at: datetime | None = None  # 75 % of the SLA limit
    due_at: datetime | None = None  # 100 %: stalled from here; NULL while on hold/closed
    escalate_at: datetime | None = None  # 150 %

    # outcome of the second opinion
    outcome_diagnosis: str | None = Field(default=None, max_length=16)
    outcome_plan: str | None = Field(default=None, max_length=16)
    outcome_sources: str | None = Field(default=None, max_length=200)  # comma list
    additional_cancer_found: bool | None = None
    outcome_recorded_at: datetime | None = None

    # closing
    close_reason: str | None = Field(default=None, max_length=24)
    close_note: str | None = Field(default=None, max_length=REASON_MAX)
    closed_from_state: str | None = Field(default=None, max_length=24)

    created_at: datetime
    updated_at: datetime
    updated_by_id: int | None = Field(default=None, foreign_key="app_user.id")

    # Derived, stored so the busiest reads need no join or subquery (issue 8):
    # the worst severity rank of the open flags whose level does not move with time
    # (deadline risk, unreachable: 0 none, 2 stalled), kept by the scan, the only writer
    # of flags; the SLA and patient-clock levels are derived from the stored deadlines and
    # biopsy date instead (core/flag_levels.py, core/scan/sweep.py say why);
    flag_rank: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # the position in `core.vocab.FUNNEL` of the furthest state any move entered (the
    # funnel's "reached"), kept by the workflow write path with each history row.
    furthest_rank: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # Kept by the database itself (triggers, migration 0005), read by the scan: a case
    # whose scan-rule columns were written since the last scan (a new case included),
    # and the failed contact attempts with no successful one at or after them.
    scan_dirty: bool = Field(default=True, sa_column_kwargs={"server_default": "0"})
    failed_contacts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class CaseEvent(SQLModel, table=True):
    """One row per move. `days_in_from_state` is the time spent in the state left, stored
    when the move is written, so stage-time medians never replay history."""

    __tablename__ = "case_event"
    __table_args__ = (
        check_in("from_state", CaseState, nullable=True),
        check_in("to_state", CaseState),
        Index("ix_case_event_case_at", "case_id", "at"),
        Index("ix_case_event_stage_days", "from_state", "days_in_from_state"),
        Index("ix_case_event_team_stage_days", "team_id", "from_state", "days_in_from_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    from_state: str | None = Field(default=None, max_length=24)  # NULL for the intake row
    to_state: str = Field(max_length=24)
    # Not indexed on its own: every query reads a case's history through
    # ix_case_event_case_at, and nothing looks events up by time alone (migration 0011).
    at: datetime
    actor_id: int | None = Field(default=None, foreign_key="app_user.id")
    reason: str | None = Field(default=None, max_length=REASON_MAX)
    days_in_from_state: float | None = None
    version: int  # the case's version after this move
    # The case's team, copied when the move is written (a case never changes team), so
    # stage times per team read one index range instead of joining every case.
    team_id: int = Field(foreign_key="team.id")



class StageStayCount(SQLModel, table=True):
    """How many history rows of a team left `state` after a stay in the eighth of a day
    `bucket` ([bucket / 8, (bucket + 1) / 8) days). Kept by triggers on case_event
    (migration 0012), read by the stage-time percentiles
    (`core.analytics.stay_percentiles`) to find the few index entries a rank lies in."""

    __tablename__ = "stage_stay_count"

    team_id: int = Field(primary_key=True)
    state: str = Field(primary_key=True, max_length=24)
    bucket: int = Field(primary_key=True)
    stays: int

class RecordItem(SQLModel, table=True):
    __tablename__ = "record_item"
    __table_args__ = (
        check_in("kind", RecordKind),
        check_in("requirement", Requirement),
        check_in("status", RecordStatus),
        UniqueConstraint("case_id", "kind", "facility", name="uq_record_item_case_kind_facility"),
        CheckConstraint(
            "status <> 'waived' OR waive_reason IS NOT NULL", name="ck_record_waive_reason"
        ),
        CheckConstraint(
            "received_at IS NULL OR requested_at IS NULL OR received_at >= requested_at",
            name="ck_record_dates_in_order",
        ),
        Index("ix_record_item_case_status", "case_id", "status"),
        # The triage headline's "records overdue" probe, from the index alone (0006).
        Index("ix_record_item_requested_chase", "case_id", "chase_on", "status",
              sqlite_where=text("status = 'requested'"),
              postgresql_where=text("status = 'requested'")),
        Index("ix_record_item_chase", "chase_on", sqlite_where=text("status = 'requested'"),
              postgresql_where=text("status = 'requested'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    kind: str = Field(max_length=32)
    requirement: str = Field(max_length=16)
    facility: str = Field(max_length=SHORT_MAX)
    status: str = Field(default=RecordStatus.NEEDED.value, max_length=16)
    requested_at: datetime | None = None
    received_at: datetime | None = None
    chase_on: date | None = None
    tracking_number: str | None = Field(default=None, max_length=64)
    waive_reason: str | None = Field(default=None, max_length=REASON_MAX)
    updated_at: datetime


class ContactAttempt(SQLModel, table=True):
    __tablename__ = "contact_attempt"
    __table_args__ = (
        check_in("channel", ContactChannel),
        check_in("outcome", ContactOutcome),
        Index("ix_contact_attempt_case_at", "case_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    at: datetime
    actor_id: int | None = Field(default=None, foreign_key="app_user.id")
    channel: str = Field(max_length=16)
    outcome: str = Field(max_length=16)
    note: str | None = Field(default=None, max_length=REASON_MAX)
    next_try_at: datetime | None = None


class Note(SQLModel, table=True):
    __tablename__ = "note"
    __table_args__ = (Index("ix_note_case_at", "case_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    at: datetime
    author_id: int | None = Field(default=None, foreign_key="app_user.id")
    body: str = Field(sa_column=Column(Text, nullable=False))


# --- clocks, flags, jobs ----------------------------------------------------------------


class SlaRule(SQLModel, table=True):
    __tablename__ = "sla_rule"
    __table_args__ = (
        check_in("state", CaseState),
        CheckConstraint("limit_days > 0", name="ck_sla_limit_positive"),
    )

    state: str = Field(primary_key=True, max_length=24)
    limit_days: int
    business_days: bool = Field(default=False)
    updated_at: datetime
    updated_by_id: int | None = Field(default=None, foreign_key="app_user.id")


class CaseFlag(SQLModel, table=True):
    """A stall flag: raised and resolved by the scan, acknowledged by a person. At most
    one open flag per case and kind (partial unique index).

    `severity` is the level the flag had WHEN RAISED. For SLA and patient-clock flags the
    level now moves with time and is never stored: read it with
    `core.flag_levels.current_severity` (or `current_severity_sql`), which derives it from
    the case's stored deadlines / biopsy date at `now`. Deadline-risk and unreachable
    flags have one level ("stalled") that never moves.
    """

    __tablename__ = "case_flag"
    __table_args__ = (
        check_in("kind", FlagKind),
        check_in("severity", FlagSeverity),
        Index("uq_case_flag_open", "case_id", "kind", unique=True,
              sqlite_where=text("resolved_at IS NULL"),
              postgresql_where=text("resolved_at IS NULL")),
        Index("ix_case_flag_open_kind", "kind", "severity",
              sqlite_where=text("resolved_at IS NULL"),
              postgresql_where=text("resolved_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    kind: str = Field(max_length=16)
    severity: str = Field(max_length=16)  # the level when raised: see the docstring
    state: str = Field(max_length=24)  # the case's state when the flag was raised
    raised_at: datetime
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    ack_note: str | None = Field(default=None, max_length=REASON_MAX)
    detail: str | None = Field(default=None, max_length=DETAIL_MAX)
    # deadline risk: days the remaining stages overran the plan when the flag was raised
    # (not kept up to date: it grows by one every day; compute today's from the case)
    shortfall_days: float | None = None


class JobRun(SQLModel, table=True):
    __tablename__ = "job_run"
    __table_args__ = (check_in("status", JobStatus), Index("ix_job_run_job_started", "job",
                                                           "started_at"))

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    status: str = Field(default=JobStatus.RUNNING.value, max_length=16)
    started_at: datetime
    finished_at: datetime | None = None
    raised: int = Field(default=0)
    resolved: int = Field(default=0)
    examined: int = Field(default=0)
    worker: str | None = Field(default=None, max_length=128)
    error: str | None = Field(default=None, max_length=DETAIL_MAX)
    # What the run compared with (JSON): a scan's `now`, cutoffs and expected remaining
    # days, read by the next scan to find what time alone has changed; stage medians.
    context: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class WorkerLease(SQLModel, table=True):
    """SQLite leader election: one row per lease, taken and renewed by compare-and-set."""

    __tablename__ = "worker_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime
    renewed_at: datetime


# --- audit ------------------------------------------------------------------------------


class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained. Case ids, never names."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        check_in("outcome", AuditOutcome),
        Index("ix_audit_entry_case", "case_id", "id"),
        Index("ix_audit_entry_user_at", "user_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    user_id: int | None = Field(default=None)  # no FK: the log outlives accounts
    role: str | None = Field(default=None, max_length=16)
    session_id: str | None = Field(default=None, max_length=16)  # short prefix of the hash
    action: str = Field(max_length=64, index=True)
    case_id: int | None = Field(default=None)
    outcome: str = Field(default=AuditOutcome.OK.value, max_length=16)
    detail: str | None = Field(default=None, max_length=DETAIL_MAX)  # JSON
    prev_hash: str = Field(max_length=64)
    row_hash: str = Field(max_length=64)


# --- conditions that partial indexes must recognise ----------------------------------------


def sql_constant(value: str) -> ColumnElement[str]:
    """A string constant written into the SQL text instead of bound as a parameter.

    PostgreSQL uses a partial index only when it can prove from the query that the
    index's predicate holds, which it cannot do with a parameter. psycopg prepares a
    statement from its fifth run on a connection, and PostgreSQL may then plan it once for
    any parameter values (a generic plan): with `state <> $1` every `state <> 'closed'`
    index below dropped out of the plan, and the triage page went from 3.5 to 13 ms at a
    million cases (README, "Speed at scale")."""
    if "'" in value:  # only our own vocabulary goes here, never user text
        raise ValueError(f"not a plain constant: {value!r}")
    return literal_column(f"'{value}'", String)


# Spelled as the partial indexes' predicates (ix_cases_triage, ix_cases_scan_*,
# ix_record_item_requested_chase, ix_record_item_chase).
CASE_IS_OPEN: ColumnElement[bool] = Case.__table__.c.state != sql_constant(
    CaseState.CLOSED.value)
RECORD_IS_REQUESTED: ColumnElement[bool] = RecordItem.__table__.c.status == sql_constant(
    RecordStatus.REQUESTED.value)
