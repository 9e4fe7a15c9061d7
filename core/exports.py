"""CSV exports of cases, events and stage times (issue 6, item 6; DESIGN.md section 7).

One function, `export_to_file`, serves the CLI and the Exports page, so both write the
same bytes for the same filter: nothing in the file depends on when or by whom it was
made (no "generated at" line, no columns computed from `now`).

- Streamed: rows come from a server-side cursor in chunks (`stream_results` +
  `yield_per` + `partitions(n)`; FIELD-NOTES: `partitions()` without a size buffered a
  whole result) and go straight through `csv.writer` to disk, so memory stays flat
  however many rows there are. Nothing is built as a DataFrame.
- Written to a hidden temporary file beside the target, hashed (SHA-256) while written,
  audited, and only then renamed into place: a file that exists was audited.
- UTF-8 with a byte-order mark (spreadsheets otherwise guess a legacy code page and
  mangle non-Latin names); CRLF rows; timestamps in ISO 8601 UTC plus a `timezone` column.
- CSV injection (OWASP): every text cell whose first meaningful character could start a
  formula (= + - @, tab, CR, LF, also behind leading spaces or invisible characters) is
  prefixed with an apostrophe. Bidirectional controls are stripped everywhere. Numbers
  the database holds as numbers are written as numbers and never touched.
- De-identified by default (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)): the `patient`
  table is never joined; no names, contact details, record/member/authorisation numbers,
  addresses, ZIP codes, free text (it may contain any of those) or dates finer than the
  year. Durations in days are kept. `case_id` is the service's own case number, not
  derived from patient data, kept so the events and cases files can be joined (the
  re-identification code 164.514(c) allows; its key stays inside Case Desk).
  An identified export needs the EXPORT_IDENTIFIED right (managers, admins) and a reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, select

from core.actor import Actor
from core.analytics.filters import CaseFilter
from core.audit import record, record_now
from core.db import session_scope
from core.errors import PermissionDenied, ValidationError
from core.models import REASON_MAX, Case, CaseEvent, Patient, Team, User
from core.permissions import Action, require
from core.timeutil import as_utc
from core.validation import ZERO_WIDTH, clean_text, strip_bidi
from core.vocab import AuditOutcome

CHUNK_ROWS = 20_000
TIMEZONE = "UTC"  # every timestamp and year in an export is UTC; said in its own column
BOM = "\ufeff"


class ExportKind(StrEnum):
    CASES = "cases"
    EVENTS = "events"
    STAGE_TIMES = "stage-times"


@dataclass(frozen=True)
class ExportRequest:
    kind: ExportKind
    filter: CaseFilter = field(default_factory=CaseFilter)
    identified: bool = False
    reason: str | None = None

    @property
    def action(self) -> Action:
        return Action.EXPORT_IDENTIFIED if self.identified else Action.EXPORT_DEIDENTIFIED

    def file_name(self) -> str:
        f = self.filter
        parts = ["casedesk", self.kind.value, "identified" if self.identified else "deid"]
        if f.start or f.end:
            parts.append(f"{f.start or 'start'}_to_{f.end or 'now'}")
        if f.team_id is not None:
            parts.append(f"team{f.team_id}")
        if f.state:
            parts.append(f.state)
        return "-".join(str(p) for p in parts) + ".csv"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    sha256: str
    bytes: int
    request: ExportRequest


# --- cell formatting ------------------------------------------------------------------

# Characters a spreadsheet may read as the start of a formula (OWASP CSV injection), and
# their full-width twins, which some spreadsheets fold to ASCII.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def neutralise(text: str) -> str:
    """A text cell made safe to open in a spreadsheet: bidi controls removed, and an
    apostrophe in front when a formula trigger is the first thing after any leading
    spaces or zero-width characters. Text that cannot start a formula is unchanged."""
    text = strip_bidi(text)
    for ch in text:
        if ch in FORMULA_TRIGGERS:
            return "'" + text
        if ch.isspace() or ZERO_WIDTH.match(ch):
            continue
        break
    return text


def cell(value: Any) -> str:
    """One value as CSV text. Real numbers stay plain numbers; text is neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 3))
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return neutralise(str(value))


def _year(value: datetime | date | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value).year
    return value.year


def _days(start: datetime | date | None, end: datetime | date | None) -> float | int | None:
    if start is None or end is None:
        return None
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((as_utc(end) - as_utc(start)).total_seconds() / 86400, 3)
    s = as_utc(start).date() if isinstance(start, datetime) else start
    e = as_utc(end).date() if isinstance(end, datetime) else end
    return (e - s).days


# --- what each export holds -----------------------------------------------------------

Row = Any  # a SQLAlchemy Row


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], Any]


def _case_columns(identified: bool) -> list[Column]:
    cols = [
        Column("case_id", lambda r: r.id),
        Column("team", lambda r: r.team),
        Column("coordinator", lambda r: r.coordinator),
        Column("state", lambda r: r.state),
        Column("priority", lambda r: r.priority),
        Column("cancer_type", lambda r: r.cancer_type),
        Column("diagnosis_category", lambda r: r.diagnosis_category),
        Column("treatment_status", lambda r: r.treatment_status),
        Column("second_opinion_reasons", lambda r: r.second_opinion_reasons),
        Column("insurer", lambda r: r.insurer),
        Column("referral_required", lambda r: r.referral_required),
        Column("referral_status", lambda r: r.referral_status),
        Column("appointment_mode", lambda r: r.appointment_mode),
        Column("no_show_count", lambda r: r.no_show_count),
        Column("on_hold", lambda r: r.on_hold),
        Column("assessed_year", lambda r: _year(r.assessed_at)),
        Column("biopsy_year", lambda r: _year(r.biopsy_date)),
        Column("days_biopsy_to_assessment", lambda r: _days(r.biopsy_date, r.assessed_at)),
        Column("days_assessment_to_outcome", lambda r: _days(r.assessed_at,
                                                             r.outcome_recorded_at)),
        Column("outcome_diagnosis", lambda r: r.outcome_diagnosis),
        Column("outcome_plan", lambda r: r.outcome_plan),
        Column("outcome_sources", lambda r: r.outcome_sources),
        Column("additional_cancer_found", lambda r: r.additional_cancer_found),
        Column("close_reason", lambda r: r.close_reason),
        Column("closed_from_state", lambda r: r.closed_from_state),
    ]
    if identified:
        cols += [
            Column("mrn", lambda r: r.mrn),
            Column("first_name", lambda r: r.first_name),
            Column("last_name", lambda r: r.last_name),
            Column("date_of_birth", lambda r: r.date_of_birth),
            Column("phone", lambda r: r.phone),
            Column("email", lambda r: r.email),
            Column("address_line", lambda r: r.address_line),
            Column("city", lambda r: r.city),
            Column("region", lambda r: r.region),
            Column("zip_code", lambda r: r.zip_code),
            Column("insurance_member_id", lambda r: r.insurance_member_id),
            Column("authorization_number", lambda r: r.authorization_number),
            Column("biopsy_facility", lambda r: r.biopsy_facility),
            Column("imaging_facility", lambda r: r.imaging_facility),
            Column("assessed_at", lambda r: r.assessed_at),
            Column("biopsy_date", lambda r: r.biopsy_date),
            Column("planned_treatment_start", lambda r: r.planned_treatment_start),
            Column("state_entered_at", lambda r: r.state_entered_at),
            Column("appointment_at", lambda r: r.appointment_at),
            Column("outcome_recorded_at", lambda r: r.outcome_recorded_at),
            Column("candidacy_reasons", lambda r: r.candidacy_reasons),
            Column("hold_reason", lambda r: r.hold_reason),
            Column("close_note", lambda r: r.close_note),
        ]
    cols.append(Column("timezone", lambda r: TIMEZONE))
    return cols


def _chosen_cases(req: ExportRequest, actor: Actor) -> Select:
    """Ids of the cases the filter selects. Used as `IN (subquery)` rather than as join
    conditions: SQLite then builds a sorted list of ids and walks the big table in id
    order, so rows stream out already ordered. With the filter on a joined `cases`, the
    planner (after ANALYZE) starts from the team index instead and sorts every row
    before returning the first one."""
    return select(Case.id).where(*req.filter.case_conditions(actor, req.action))


def _cases_query(req: ExportRequest, actor: Actor) -> Select:
    stmt = select(*Case.__table__.columns)
    if req.identified:
        stmt = stmt.add_columns(
            Patient.mrn, Patient.first_name, Patient.last_name, Patient.date_of_birth,
            Patient.phone, Patient.email, Patient.address_line, Patient.city, Patient.region,
            Patient.zip_code,
        ).join(Patient, Patient.id == Case.patient_id)
    return stmt.where(Case.id.in_(_chosen_cases(req, actor))).order_by(Case.id)


def _event_columns(identified: bool) -> list[Column]:
    cols = [
        Column("case_id", lambda r: r.case_id),
        Column("event_no", lambda r: r.event_no),
        Column("team", lambda r: r.team),
        Column("from_state", lambda r: r.from_state),
        Column("to_state", lambda r: r.to_state),
        Column("year", lambda r: _year(r.at)),
        Column("days_since_assessment", lambda r: _days(r.assessed_at, r.at)),
        Column("days_in_from_state", lambda r: r.days_in_from_state),
    ]
    if identified:
        cols += [
            Column("at", lambda r: r.at),
            Column("by", lambda r: r.by),
            Column("reason", lambda r: r.reason),
        ]
    cols.append(Column("timezone", lambda r: TIMEZONE))
    return cols


def _events_query(req: ExportRequest, actor: Actor) -> Select:
    stmt = (
        select(CaseEvent.case_id, CaseEvent.from_state, CaseEvent.to_state, CaseEvent.at,
               CaseEvent.days_in_from_state, CaseEvent.actor_id, Case.assessed_at,
               Case.team_id)
        .join(Case, Case.id == CaseEvent.case_id)
        .where(CaseEvent.case_id.in_(_chosen_cases(req, actor)))
    )
    if req.identified:
        stmt = stmt.add_columns(CaseEvent.reason)
    # (case_id, at) is indexed, and the row id breaks ties in the order moves were written.
    return stmt.order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)


@dataclass(frozen=True)
class _Names:
    """Team names and usernames, looked up in Python: both tables are small, and keeping
    them out of the streaming query keeps its plan a plain walk in id order."""

    teams: dict[int, str]
    users: dict[int, str]


def _load_names(engine: Engine) -> _Names:
    with session_scope(engine, write=False) as session:
        teams = {r.id: r.name for r in session.exec(select(Team.id, Team.name)).all()}
        users = {r.id: r.username for r in session.exec(select(User.id, User.username)).all()}
    return _Names(teams, users)


class _Out:
    """A database row as the columns see it: its own fields, names resolved, and (for
    events) its position in the case's history (1 = intake)."""

    __slots__ = ("_row", "_names", "event_no")

    def __init__(self, row: Row, names: _Names, event_no: int = 0):
        self._row, self._names, self.event_no = row, names, event_no

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)

    @property
    def team(self) -> str | None:
        return self._names.teams.get(self._row.team_id)

    @property
    def coordinator(self) -> str | None:
        return self._names.users.get(self._row.assignee_id)

    @property
    def by(self) -> str | None:
        return self._names.users.get(self._row.actor_id)


def _number_events(rows: Iterator[Row], names: _Names) -> Iterator[_Out]:
    last, n = None, 0
    for row in rows:
        n = n + 1 if row.case_id == last else 1
        last = row.case_id
        yield _Out(row, names, n)


STAGE_COLUMNS = ["month", "state", "stays", "median_days", "p90_days", "sla_days", "timezone"]


# --- writing --------------------------------------------------------------------------


class _HashingFile(io.RawIOBase):
    """Passes bytes to the real file and hashes them on the way: one pass, no re-read."""

    def __init__(self, raw: io.BufferedWriter):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001 - bytes-like
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)


def _stream(engine: Engine, stmt: Select, chunk: int) -> Iterator[Row]:
    """Rows of `stmt` from a server-side cursor, `chunk` at a time (flat memory)."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
        for part in result.partitions(chunk):
            yield from part


def _check(engine: Engine, actor: Actor, req: ExportRequest, now: datetime) -> ExportRequest:
    """Permission, team and reason checks; a refusal is audited in its own transaction."""
    try:
        require(actor, req.action)
        req.filter.case_conditions(actor, req.action)  # refuses a team outside reach
        if req.identified:
            reason = clean_text(req.reason, field="Reason", max_length=REASON_MAX)
            if not reason:
                raise ValidationError("An identified export needs a reason.")
            return ExportRequest(req.kind, req.filter, True, reason)
        return ExportRequest(req.kind, req.filter, False, None)
    except PermissionDenied:
        record_now(engine, actor=actor, action=f"export.{req.kind.value}", now=now,
                   outcome=AuditOutcome.DENIED, detail=_detail(req, rows=None, sha=None))
        raise


def _detail(req: ExportRequest, *, rows: int | None, sha: str | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"kind": req.kind.value, "filter": req.filter.describe(),
                              "identified": req.identified}
    if req.identified and req.reason:
        detail["reason"] = req.reason
    if rows is not None:
        detail["rows"] = rows
        detail["sha256"] = sha
    return detail


def write_csv(engine: Engine, actor: Actor, req: ExportRequest, out: io.TextIOBase, *,
              chunk: int = CHUNK_ROWS) -> int:
    """Write the export's rows to a text stream; returns the number of data rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    out.write(BOM)
    rows = 0
    if req.kind is ExportKind.STAGE_TIMES:
        # A few dozen aggregate rows; imported here so the streaming exports never load
        # pandas (~100 MB resident on its own).
        from core.analytics.stage_times import stage_times

        writer.writerow(STAGE_COLUMNS)
        with session_scope(engine, write=False) as session:
            table = stage_times(session, actor, req.filter, by="month")
        for r in table.itertuples(index=False):
            writer.writerow([cell(r.group), cell(r.state), cell(int(r.n)),
                             cell(float(r.median_days)), cell(float(r.p90_days)),
                             cell(None if r.sla_days is None else int(r.sla_days)),
                             TIMEZONE])
            rows += 1
        return rows

    names = _load_names(engine)
    if req.kind is ExportKind.CASES:
        columns = _case_columns(req.identified)
        source = (_Out(r, names) for r in _stream(engine, _cases_query(req, actor), chunk))
    else:
        columns = _event_columns(req.identified)
        source = _number_events(_stream(engine, _events_query(req, actor), chunk), names)
    writer.writerow([c.header for c in columns])
    getters = [c.value for c in columns]
    for row in source:
        writer.writerow([cell(get(row)) for get in getters])
        rows += 1
    return rows


def export_to_file(engine: Engine, actor: Actor, req: ExportRequest, path: str | Path, *,
                   now: datetime, overwrite: bool = False,
                   chunk: int = CHUNK_ROWS) -> ExportResult:
    """Check, stream the export to `path`, audit it (filter, rows, SHA-256), and return
    what was written. The file appears only once it is complete and audited."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValidationError(f"{path} already exists; choose another file name.")
    req = _check(engine, actor, req, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    # Exports may hold health information: readable by the owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(fd, "wb", closefd=True) as raw:
            hashing = _HashingFile(raw)
            buffered = io.BufferedWriter(hashing, buffer_size=1 << 16)
            text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
            rows = write_csv(engine, actor, req, text, chunk=chunk)
            text.flush()
            buffered.flush()
            text.detach()
        sha = hashing.sha.hexdigest()
        with session_scope(engine) as session:
            record(session, actor=actor, action=f"export.{req.kind.value}", now=now,
                   detail=_detail(req, rows=rows, sha=sha) | {"bytes": hashing.size})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=path, rows=rows, sha256=sha, bytes=hashing.size, request=req)


def headers(kind: ExportKind, identified: bool = False) -> Sequence[str]:
    """The column names of an export, for documentation and the page's preview."""
    if kind is ExportKind.CASES:
        return [c.header for c in _case_columns(identified)]
    if kind is ExportKind.EVENTS:
        return [c.header for c in _event_columns(identified)]
    return list(STAGE_COLUMNS)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str) -> str:
    """A download name with no path separators or control characters."""
    return _SAFE_NAME.sub("_", name).strip("._") or "export.csv"
