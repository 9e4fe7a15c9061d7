"""CSV exports of cases, events and stage times (issue 6, item 6; DESIGN.md section 7).

One function, `export_to_file`, serves the CLI and the Exports page, so both write the
same bytes for the same filter: nothing in the file depends on when or by whom it was
made (no "generated at" line, no columns computed from `now`), nor on the database: the
same rows give the same bytes on SQLite and PostgreSQL.

- Computed by the database (issue 8: exporting 6,000,000 events is a matter of seconds,
  not of a Python loop per cell): years, day counts and their rounding are SQL
  expressions, rows are read from the raw DBAPI cursor in `fetchmany` chunks (no
  SQLAlchemy row objects), and each chunk is written, hashed and counted as one block.
  Python touches a cell only where it must: team and user names (small tables, looked up
  once and neutralised once), free text (neutralised), and the event number of the
  de-identified events file on SQLite (a running count: SQLite's `row_number()` costs
  more than the rest of the row). On PostgreSQL that file is one `COPY (SELECT ...) TO
  STDOUT` whose lines the database writes whole.
- Streamed: rows come in chunks from a cursor (server-side on PostgreSQL) and go
  straight to disk, so memory stays flat however many rows there are. Nothing is built
  as a DataFrame.
- Written to a hidden temporary file beside the target, hashed (SHA-256) while written,
  audited, and only then renamed into place: a file that exists was audited.
- UTF-8 with a byte-order mark (spreadsheets otherwise guess a legacy code page and
  mangle non-Latin names); CRLF rows; timestamps in ISO 8601 UTC plus a `timezone` column.
- Durations in days have three decimals, rounded half away from zero from the exact
  microseconds (timestamps) or the stored value (`days_in_from_state`), and are written
  as the shortest decimal of that number (`2.695`, `2.1`, `0.0`).
- CSV injection (OWASP): every text cell whose first meaningful character could start a
  formula (= + - @, tab, CR, LF, also behind leading spaces or invisible characters) is
  prefixed with an apostrophe. Bidirectional controls are stripped everywhere. Numbers
  the database holds as numbers are written as numbers and never touched. Columns whose
  values a CHECK constraint limits to our own vocabulary (states, priorities...) cannot
  hold a formula and are written as stored.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Engine,
    Float,
    Integer,
    Select,
    String,
    Text,
    case,
    cast,
    column,
    extract,
    func,
    literal,
    literal_column,
    not_,
    select,
    values,
)

from core.actor import Actor
from core.analytics.filters import CaseFilter
from core.audit import record, record_now
from core.db import session_scope, sqlite_page_cache
from core.errors import PermissionDenied, ValidationError
from core.models import REASON_MAX, Case, CaseEvent, Patient, Team, User
from core.permissions import Action, require
from core.timeutil import as_utc
from core.validation import ZERO_WIDTH, clean_text, strip_bidi
from core.vocab import AuditOutcome

CHUNK_ROWS = 20_000
# Wide exports (cases: 26 columns, 49 identified) read fewer rows at a time, so that a
# chunk of driver values stays a few MB whatever the width.
CHUNK_CELLS = 200_000
TIMEZONE = "UTC"  # every timestamp and year in an export is UTC; said in its own column
BOM = "\ufeff"
CRLF = "\r\n"


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


def csv_field(text: str) -> str:
    """`text` as `csv.writer` writes it inside a row (quoted only when it must be), for
    the lines assembled without a writer."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator=CRLF).writerow([text, ""])
    return buf.getvalue()[: -len("," + CRLF)]


# Free text repeats (insurers, facilities): neutralise each distinct short value once.
_CACHE_MAX_ENTRIES, _CACHE_MAX_LENGTH = 20_000, 200


def _text_formatter() -> Callable[[Any], Any]:
    cache: dict[str, str] = {}

    def fmt(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            return cell(value)  # a number in a text column stays a number
        out = cache.get(value)
        if out is None:
            out = neutralise(value)
            if len(value) <= _CACHE_MAX_LENGTH and len(cache) < _CACHE_MAX_ENTRIES:
                cache[value] = out
        return out

    return fmt


def _timestamp_cell(value: Any) -> str | None:
    """ISO 8601 UTC. SQLite's raw driver gives SQLAlchemy's stored text (UTC, no
    offset), psycopg an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).isoformat()


def _date_cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = date.fromisoformat(value)
    return value.isoformat()


# --- SQL for derived values (the few expressions SQLite and PostgreSQL spell differently)

_THOUSANDTH_US = 86_400_000  # microseconds in a thousandth of a day
# Added before the integer division, then taken off again, so that truncating division
# (SQLite and PostgreSQL both truncate towards zero) floors negative numbers too; good
# for differences up to 270 years.
_FLOOR_OFFSET = 100_000_000


def _utc_year(ts: Any, pg: bool) -> ColumnElement[int]:
    if pg:
        return cast(extract("year", func.timezone("UTC", ts)), Integer)
    return cast(func.substr(ts, 1, 4), Integer)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff'


def _date_year(day: Any, pg: bool) -> ColumnElement[int]:
    if pg:
        return cast(extract("year", day), Integer)
    return cast(func.substr(day, 1, 4), Integer)


def _micros_between(start: Any, end: Any, pg: bool) -> ColumnElement[int]:
    """Exact microseconds from `start` to `end` (integer arithmetic, no float rounding)."""
    if pg:
        # date_part is float8 (extract's exact numeric is several times slower): the
        # seconds of an interval under a century are within 0.01 us of exact, so
        # rounding the microseconds gives them back exactly.
        return cast(func.round(func.date_part("epoch", end - start) * 1_000_000),
                    BigInteger)
    # Whole seconds of the text without its fraction: strftime('%s') would round the
    # fraction to milliseconds first and carry .9995 into the next second.
    seconds = (cast(func.strftime("%s", func.substr(end, 1, 19)), BigInteger)
               - cast(func.strftime("%s", func.substr(start, 1, 19)), BigInteger))
    micros = cast(func.substr(end, 21, 6), BigInteger) - cast(func.substr(start, 21, 6),
                                                               BigInteger)
    return seconds * 1_000_000 + micros


def _thousandths_from_micros(us: ColumnElement[int]) -> ColumnElement[int]:
    """Days in thousandths, half rounded up: floor((us + half) / unit), in integers."""
    shifted = us + (_THOUSANDTH_US // 2 + _FLOOR_OFFSET * _THOUSANDTH_US)
    return shifted // literal_column(str(_THOUSANDTH_US), BigInteger) - _FLOOR_OFFSET


# A stored 2.6945 is 2.69449999999999989... as a float, and 1000 times it falls a hair
# short of 2694.5: this nudge (far below a microsecond) rounds it as the decimal it is.
_HALF_NUDGED = "0.500000001"


def _thousandths_from_days(days: Any, pg: bool) -> ColumnElement[int]:
    """A stored day count in thousandths, half rounded away from zero. Both databases
    do the same IEEE arithmetic and truncate, so they agree to the last bit."""
    trunc = (lambda x: cast(func.trunc(x), BigInteger)) if pg else \
        (lambda x: cast(x, BigInteger))
    half = literal_column(_HALF_NUDGED, Float)
    return case((days < 0, -trunc(half - days * 1000)), else_=trunc(days * 1000 + half))


def _days_number(thousandths: ColumnElement[int]) -> ColumnElement[float]:
    """Thousandths as a float (the Python-side writers print its shortest decimal)."""
    return cast(thousandths, Float) / 1000


def _days_text(thousandths: ColumnElement[int]) -> ColumnElement[str]:
    """Thousandths as the text Python prints for their float ('2.695', '2.1', '0.0',
    '-0.5'), for the lines PostgreSQL writes whole. Its float8 output is the shortest
    text that reads back as the same float, as Python's is; only a whole number needs
    the '.0' Python adds."""
    return case(
        (thousandths % 1000 == 0,
         cast(thousandths // literal_column("1000", BigInteger), Text).concat(".0")),
        else_=cast(cast(thousandths, Float) / 1000, Text))


def _whole_days(day: Any, ts: Any, pg: bool) -> ColumnElement[int]:
    """Whole calendar days from a DATE to the UTC day of a timestamp."""
    if pg:
        return cast(func.timezone("UTC", ts), Date) - day
    return cast(func.julianday(func.date(ts)) - func.julianday(day), Integer)


def _bool_text(col: Any) -> ColumnElement[str]:
    return case((col, "true"), (not_(col), "false"))



# --- what each export holds -----------------------------------------------------------

# How the Python-side writer finishes a cell the database could not: None = written as
# the driver returns it (numbers, our own vocabulary, text built in SQL).
TEXT, TEAM, USER, TIMESTAMP, DAY, EVENT_NO = "text", "team", "user", "timestamp", "day", "no"


@dataclass(frozen=True)
class Column:
    header: str
    sql: Callable[[bool], Any]  # is PostgreSQL -> the SQL expression
    kind: str | None = None


def _col(header: str, sql: Callable[[bool], Any] | Any, kind: str | None = None) -> Column:
    return Column(header, sql if callable(sql) else (lambda _pg, s=sql: s), kind)


def _case_columns(identified: bool) -> list[Column]:
    c = Case
    cols = [
        _col("case_id", c.id),
        _col("team", c.team_id, TEAM),
        _col("coordinator", c.assignee_id, USER),
        _col("state", c.state),
        _col("priority", c.priority),
        _col("cancer_type", c.cancer_type, TEXT),  # no CHECK: any text
        _col("diagnosis_category", c.diagnosis_category),
        _col("treatment_status", c.treatment_status),
        _col("second_opinion_reasons", c.second_opinion_reasons, TEXT),
        _col("insurer", c.insurer, TEXT),
        _col("referral_required", _bool_text(c.referral_required)),
        _col("referral_status", c.referral_status),
        _col("appointment_mode", c.appointment_mode),
        _col("no_show_count", c.no_show_count),
        _col("on_hold", _bool_text(c.on_hold)),
        _col("assessed_year", lambda pg: _utc_year(c.assessed_at, pg)),
        _col("biopsy_year", lambda pg: _date_year(c.biopsy_date, pg)),
        _col("days_biopsy_to_assessment", lambda pg: _whole_days(c.biopsy_date,
                                                                 c.assessed_at, pg)),
        _col("days_assessment_to_outcome", lambda pg: _days_number(_thousandths_from_micros(
            _micros_between(c.assessed_at, c.outcome_recorded_at, pg)))),
        _col("outcome_diagnosis", c.outcome_diagnosis),
        _col("outcome_plan", c.outcome_plan),
        _col("outcome_sources", c.outcome_sources, TEXT),
        _col("additional_cancer_found", _bool_text(c.additional_cancer_found)),
        _col("close_reason", c.close_reason),
        _col("closed_from_state", c.closed_from_state),
    ]
    if identified:
        p = Patient
        cols += [
            _col("mrn", p.mrn, TEXT),
            _col("first_name", p.first_name, TEXT),
            _col("last_name", p.last_name, TEXT),
            _col("date_of_birth", p.date_of_birth, DAY),
            _col("phone", p.phone, TEXT),
            _col("email", p.email, TEXT),
            _col("address_line", p.address_line, TEXT),
            _col("city", p.city, TEXT),
            _col("region", p.region, TEXT),
            _col("zip_code", p.zip_code, TEXT),
            _col("insurance_member_id", c.insurance_member_id, TEXT),
            _col("authorization_number", c.authorization_number, TEXT),
            _col("biopsy_facility", c.biopsy_facility, TEXT),
            _col("imaging_facility", c.imaging_facility, TEXT),
            _col("assessed_at", c.assessed_at, TIMESTAMP),
            _col("biopsy_date", c.biopsy_date, DAY),
            _col("planned_treatment_start", c.planned_treatment_start, DAY),
            _col("state_entered_at", c.state_entered_at, TIMESTAMP),
            _col("appointment_at", c.appointment_at, TIMESTAMP),
            _col("outcome_recorded_at", c.outcome_recorded_at, TIMESTAMP),
            _col("candidacy_reasons", c.candidacy_reasons, TEXT),
            _col("hold_reason", c.hold_reason, TEXT),
            _col("close_note", c.close_note, TEXT),
        ]
    cols.append(_col("timezone", literal_column(f"'{TIMEZONE}'", String)))
    return cols


def _since_assessment(pg: bool) -> ColumnElement[int]:
    return _thousandths_from_micros(_micros_between(Case.assessed_at, CaseEvent.at, pg))


def _in_from_state(pg: bool) -> ColumnElement[int]:
    return _thousandths_from_days(CaseEvent.days_in_from_state, pg)


def _event_columns(identified: bool) -> list[Column]:
    e = CaseEvent
    cols = [
        _col("case_id", e.case_id),
        _col("event_no", literal_column("0", Integer), EVENT_NO),  # counted while written
        _col("team", Case.team_id, TEAM),
        _col("from_state", e.from_state),
        _col("to_state", e.to_state),
        _col("year", lambda pg: _utc_year(e.at, pg)),
        _col("days_since_assessment", lambda pg: _days_number(_since_assessment(pg))),
        _col("days_in_from_state", lambda pg: _days_number(_in_from_state(pg))),
    ]
    if identified:
        cols += [
            _col("at", e.at, TIMESTAMP),
            _col("by", e.actor_id, USER),
            _col("reason", e.reason, TEXT),
        ]
    cols.append(_col("timezone", literal_column(f"'{TIMEZONE}'", String)))
    return cols


def _columns(req: ExportRequest) -> list[Column]:
    if req.kind is ExportKind.CASES:
        return _case_columns(req.identified)
    return _event_columns(req.identified)


def _chosen_cases(req: ExportRequest, actor: Actor) -> Select:
    """Ids of the cases the filter selects. Used as `IN (subquery)` rather than as join
    conditions: SQLite then builds a sorted list of ids and walks the big table in id
    order, so rows stream out already ordered. With the filter on a joined `cases`, the
    planner (after ANALYZE) starts from the team index instead and sorts every row
    before returning the first one."""
    return select(Case.id).where(*req.filter.case_conditions(actor, req.action))


def _cases_query(req: ExportRequest, actor: Actor, exprs: Sequence[Any]) -> Select:
    stmt = select(*exprs).select_from(Case)
    if req.identified:
        stmt = stmt.join(Patient, Patient.id == Case.patient_id)
    return stmt.where(Case.id.in_(_chosen_cases(req, actor))).order_by(Case.id)


def _events_query(req: ExportRequest, actor: Actor, exprs: Sequence[Any]) -> Select:
    # (case_id, at) is indexed, and the row id breaks ties in the order moves were written.
    return (select(*exprs).select_from(CaseEvent)
            .join(Case, Case.id == CaseEvent.case_id)
            .where(CaseEvent.case_id.in_(_chosen_cases(req, actor)))
            .order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id))


def _query(req: ExportRequest, actor: Actor, exprs: Sequence[Any]) -> Select:
    if req.kind is ExportKind.CASES:
        return _cases_query(req, actor, exprs)
    return _events_query(req, actor, exprs)


@dataclass(frozen=True)
class _Names:
    """Team names and usernames as finished CSV text, looked up once: both tables are
    small, and keeping them out of the streaming query keeps its plan a plain walk in
    id order."""

    teams: dict[int, str]
    users: dict[int, str]


def _load_names(engine: Engine, *, users: bool) -> _Names:
    with session_scope(engine, write=False) as session:
        teams = {r.id: neutralise(r.name) for r in session.exec(select(Team.id, Team.name))}
        people = {r.id: neutralise(r.username)
                  for r in session.exec(select(User.id, User.username))} if users else {}
    return _Names(teams, people)


STAGE_COLUMNS = ["month", "state", "stays", "median_days", "p90_days", "sla_days", "timezone"]


# --- writing --------------------------------------------------------------------------


class _Sink:
    """Where the file's bytes go: hashed and counted on the way, one block at a time."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write_bytes(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        self._raw.write(data)

    def write(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=CRLF).writerows(rows)
    return buf.getvalue()


EXPORT_CACHE_KIB = 2_048  # SQLite's default page cache: enough for one pass


def _raw_chunks(engine: Engine, stmt: Select, chunk: int) -> Iterator[Sequence[Sequence]]:
    """Rows of `stmt`, `chunk` at a time, in bounded memory. SQLAlchemy binds and runs
    the statement; on SQLite the rows are then read from its DBAPI cursor as plain
    tuples (SQLite steps through the result as it is fetched), skipping SQLAlchemy's
    per-row processing. PostgreSQL needs a server-side cursor to stream, and SQLAlchemy
    reads one row ahead on those, so there its rows are taken as they are."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # One pass over every row gains nothing from the page cache the pool's
            # connections keep for pages read again (core.db, 64 MB): filled by this
            # walk, it was 64 MB of the export process's 162 at 100,000 cases. Lowering
            # it frees the pages; the connection gets its usual size back afterwards.
            with sqlite_page_cache(conn, EXPORT_CACHE_KIB):
                result = conn.execute(stmt)
                try:
                    cursor = result.cursor
                    while rows := cursor.fetchmany(chunk):
                        yield rows
                finally:
                    result.close()
            return
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
        # FIELD-NOTES: partitions() without a size buffered the whole result.
        yield from result.partitions(chunk)


def _formatters(columns: Sequence[Column], names: _Names) -> list[tuple[int, Callable]]:
    made = {TEAM: lambda: names.teams.get, USER: lambda: names.users.get,
            TEXT: _text_formatter, TIMESTAMP: lambda: _timestamp_cell, DAY: lambda: _date_cell}
    return [(i, made[c.kind]()) for i, c in enumerate(columns)
            if c.kind is not None and c.kind != EVENT_NO]


def _write_rows(engine: Engine, actor: Actor, req: ExportRequest, sink: _Sink,
                chunk: int) -> int:
    """Any export, on any database: SQL values, finished in Python where a column needs
    it, written by `csv.writer`."""
    columns = _columns(req)
    pg = engine.dialect.name == "postgresql"
    names = _load_names(engine, users=any(c.kind == USER for c in columns))
    fmts = _formatters(columns, names)
    numbered = any(c.kind == EVENT_NO for c in columns)
    stmt = _query(req, actor, [c.sql(pg) for c in columns])
    rows, last, n = 0, None, 0
    for raw in _raw_chunks(engine, stmt, max(1, min(chunk, CHUNK_CELLS // len(columns)))):
        out = []
        for values_ in raw:
            row = list(values_)
            for i, fmt in fmts:
                row[i] = fmt(row[i])
            if numbered:  # position in the case's history, 1 = intake
                n = n + 1 if row[0] == last else 1
                last = row[0]
                row[1] = n
            out.append(row)
        sink.write(_csv_text(out))
        rows += len(out)
    return rows


def _fast_events(req: ExportRequest) -> bool:
    """The de-identified events file holds only numbers, our vocabulary and team names:
    it has a path with no per-cell Python."""
    return req.kind is ExportKind.EVENTS and not req.identified


def _write_events_sqlite(engine: Engine, actor: Actor, req: ExportRequest, sink: _Sink,
                         chunk: int) -> int:
    """De-identified events on SQLite: the database computes every value (NULL as ''),
    Python adds the running event number and the team's finished cell, one f-string a
    row. Same bytes as `_write_rows` (a test holds them together)."""
    names = _load_names(engine, users=False)
    teams = {k: csv_field(v) for k, v in names.teams.items()}
    e = CaseEvent
    stmt = _events_query(req, actor, [
        e.case_id, Case.team_id, func.coalesce(e.from_state, ""), e.to_state,
        _utc_year(e.at, False),
        func.coalesce(_days_number(_since_assessment(False)), ""),
        func.coalesce(_days_number(_in_from_state(False)), ""),
    ])
    tail = f",{TIMEZONE}{CRLF}"
    rows, last, n = 0, None, 0
    for raw in _raw_chunks(engine, stmt, chunk):
        lines = []
        add = lines.append
        for case_id, team_id, from_state, to_state, year, since, in_state in raw:
            n = n + 1 if case_id == last else 1
            last = case_id
            add(f"{case_id},{n},{teams[team_id]},{from_state},{to_state},{year},{since},"
                f"{in_state}{tail}")
        sink.write("".join(lines))
        rows += len(lines)
    return rows


def _events_lines_pg(req: ExportRequest, actor: Actor,
                     team_cells: dict[int, str]) -> Select:
    """One finished CSV line (without its line break) per event: PostgreSQL writes the
    whole file body. The numbers are computed once in an inner query (`OFFSET 0` keeps
    the planner from pasting each expression into every place the text uses it) and
    turned into text outside; the outer ORDER BY costs nothing, the rows already come
    in that order."""
    e = CaseEvent
    teams = values(column("id", Integer), column("cell", Text), name="team_cell").data(
        sorted(team_cells.items()) or [(0, "")])
    inner = (_events_query(req, actor, [
        e.case_id, e.at, e.id, e.from_state, e.to_state, teams.c.cell,
        func.row_number().over(partition_by=e.case_id, order_by=(e.at, e.id)).label("no"),
        _utc_year(e.at, True).label("year"),
        _since_assessment(True).label("since"), _in_from_state(True).label("in_state"),
    ]).join(teams, teams.c.id == Case.team_id).offset(0).subquery("ev"))
    parts = [
        cast(inner.c.case_id, Text), cast(inner.c.no, Text), inner.c.cell,
        func.coalesce(inner.c.from_state, ""), inner.c.to_state, cast(inner.c.year, Text),
        _days_text(inner.c.since), func.coalesce(_days_text(inner.c.in_state), ""),
        literal(TIMEZONE, Text),
    ]
    line = parts[0]
    for part in parts[1:]:
        line = line.concat(literal_column("','", Text)).concat(part)
    return select(line).order_by(inner.c.case_id, inner.c.at, inner.c.id)


def _write_events_pg(engine: Engine, actor: Actor, req: ExportRequest, sink: _Sink,
                     chunk: int) -> int:
    """De-identified events on PostgreSQL: `COPY (SELECT line ...) TO STDOUT` streams
    the lines the database built; Python only turns its line feeds into CRLF (and undoes
    COPY's backslash escapes in the rare block that has one), hashes and writes."""
    import psycopg

    names = _load_names(engine, users=False)
    stmt = _events_lines_pg(req, actor, {k: csv_field(v) for k, v in names.teams.items()})
    compiled = stmt.compile(dialect=engine.dialect)
    with engine.connect() as conn:
        raw_conn = conn.connection.driver_connection
        # COPY takes no bind parameters: psycopg merges them into the text, quoted.
        query = psycopg.ClientCursor(raw_conn).mogrify(
            f"COPY ({compiled}) TO STDOUT", compiled.params)
        try:
            return _copy_out(raw_conn.pgconn, query.encode(), sink, chunk)
        except BaseException:
            conn.invalidate()  # a COPY left half read: the connection is not reusable
            raise


def _copy_out(libpq: Any, query: bytes, sink: _Sink, chunk: int) -> int:
    """Run a `COPY ... TO STDOUT` on the libpq connection and write its rows in blocks.

    psycopg's `Copy` object takes several microseconds of Python per message and the
    server sends one message per row: at 6,000,000 rows that alone would double the
    floor. Its documented libpq layer (`psycopg.pq`) reads a message in well under one.
    """
    import psycopg
    from psycopg.pq import ExecStatus

    libpq.send_query(query)
    while libpq.flush():  # the connection is non-blocking: send the whole query
        pass
    result = libpq.get_result()  # waits
    if result is None or result.status != ExecStatus.COPY_OUT:
        message = result.get_error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) \
            if result is not None else None
        while libpq.get_result() is not None:
            pass
        raise psycopg.DatabaseError((message or b"COPY did not start").decode())
    rows, more, get = 0, True, libpq.get_copy_data
    while more:
        pending: list[bytes] = []
        add = pending.append
        for _ in range(chunk):
            size, data = get(0)  # waits for the next row
            if size <= 0:  # -1: the end; -2: an error, which the result below holds
                more = False
                break
            # Copied at once: holding libpq's buffer until the block is written costs
            # twice the CPU.
            add(bytes(data))
        rows += _copy_block(pending, sink)
    final = libpq.get_result()
    while libpq.get_result() is not None:
        pass
    if final is None or final.status != ExecStatus.COMMAND_OK:
        message = final.get_error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) \
            if final is not None else None
        raise psycopg.DatabaseError((message or b"COPY failed").decode())
    return rows


_COPY_ESCAPES = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r",
                 b"t": b"\t", b"v": b"\v"}
_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


def _copy_block(pending: list[bytes], sink: _Sink) -> int:
    """Rows of COPY's text format as CSV lines: each row ends in a bare LF; a backslash
    starts an escape (COPY TO writes only those in _COPY_ESCAPES)."""
    if not pending:
        return 0
    block = b"".join(pending)
    pending.clear()
    if b"\\" not in block:
        sink.write_bytes(block.replace(b"\n", b"\r\n"))
        return block.count(b"\n")
    lines = [_COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES[m.group(1)], line)
             for line in block.split(b"\n")[:-1]]
    sink.write_bytes(b"".join(line + b"\r\n" for line in lines))
    return len(lines)


def _write_stage_times(engine: Engine, actor: Actor, req: ExportRequest, sink: _Sink) -> int:
    # A few dozen aggregate rows; imported here so the streaming exports never load
    # pandas (~100 MB resident on its own).
    from core.analytics.stage_times import stage_times

    with session_scope(engine, write=False) as session:
        table = stage_times(session, actor, req.filter, by="month")
    rows = [[cell(r.group), cell(r.state), cell(int(r.n)), cell(float(r.median_days)),
             cell(float(r.p90_days)), cell(None if r.sla_days is None else int(r.sla_days)),
             TIMEZONE] for r in table.itertuples(index=False)]
    sink.write(_csv_text(rows))
    return len(rows)


def _write_body(engine: Engine, actor: Actor, req: ExportRequest, sink: _Sink, *,
                chunk: int) -> int:
    """Write the export (byte-order mark, header, rows); returns the number of rows."""
    sink.write(BOM + _csv_text([headers(req.kind, req.identified)]))
    if req.kind is ExportKind.STAGE_TIMES:
        return _write_stage_times(engine, actor, req, sink)
    if _fast_events(req):
        if engine.dialect.name == "postgresql":
            return _write_events_pg(engine, actor, req, sink, chunk)
        if engine.dialect.name == "sqlite":
            return _write_events_sqlite(engine, actor, req, sink, chunk)
    return _write_rows(engine, actor, req, sink, chunk)


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
        with open(fd, "wb", buffering=1 << 20, closefd=True) as raw:
            sink = _Sink(raw)
            rows = _write_body(engine, actor, req, sink, chunk=chunk)
        sha = sink.sha.hexdigest()
        with session_scope(engine) as session:
            record(session, actor=actor, action=f"export.{req.kind.value}", now=now,
                   detail=_detail(req, rows=rows, sha=sha) | {"bytes": sink.size})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=path, rows=rows, sha256=sha, bytes=sink.size, request=req)


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
