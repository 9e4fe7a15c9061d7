"""Synthetic demo data: a whole second-opinion service with a believable history.

`generate_demo(engine, cases=N, seed=S, now=T)` adds teams, coordinators, managers, an
admin, specialists, patients and N cases spread over every state. Each case's history
obeys the workflow table of DESIGN.md section 4 (forward in funnel order, the two
backward moves - often, about six history rows per case in all - and a close from any
open state), stores the time spent in each
state on its events, and leaves the case's `state_entered_at`, `version` and stored
deadlines exactly where the workflow engine would have left them.

Determinism: every value is drawn from one `random.Random(seed)` (and Faker instances
seeded from it) in a fixed order, and every timestamp is an offset from the reference
time `now` that the caller passes in. Same seed + same `now` -> the same rows. The CLI
pins `now` to the start of the current UTC day unless `--now` is given, so two runs on
the same day with the same seed produce identical databases.

Speed: rows are built as plain dicts and written with the driver's `executemany` in
chunks inside one transaction (all or nothing), with primary keys assigned here so
children can point at parents without a round trip. The demo only goes into a database
that holds no cases, so it never mixes with real work.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from operator import itemgetter
from queue import Empty
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlmodel import Session

from core import audit
from core.actor import Actor
from core.db import refresh_planner_statistics
from core.demo_limits import MAX_CASES
from core.errors import CaseDeskError, ValidationError
from core.models import (
    DETAIL_MAX,
    Case,
    CaseEvent,
    ContactAttempt,
    Patient,
    RecordItem,
    Specialist,
    Team,
    User,
)
from core.validation import search_key
from core.vocab import (
    AppointmentMode,
    CaseState,
    ChangeSource,
    CloseReason,
    ContactChannel,
    ContactOutcome,
    DiagnosisCategory,
    OutcomeDiagnosis,
    OutcomePlan,
    Priority,
    RecordKind,
    RecordStatus,
    ReferralStatus,
    Requirement,
    Role,
    SecondOpinionReason,
    TreatmentStatus,
)
from core.workflows.candidacy import candidacy
from core.workflows.clocks import SlaLimit, ensure_default_rules, load_limits, sla_deadlines
from core.workflows.guards import PATIENT_SOURCE
from core.workflows.records import checklist_template, facility_for

DEFAULT_SEED = 42
DEFAULT_CHUNK = 5_000

S = CaseState
FUNNEL_ORDER = [S.ASSESSED, S.REFERRAL, S.RECORDS_REQUESTED, S.RECORDS_RECEIVED, S.SCHEDULED,
                S.SEEN]

# Where cases end up (a snapshot of a live service): (state, closed_from or None, weight %).
_ENDINGS: list[tuple[CaseState, CaseState | None, float]] = [
    (S.ASSESSED, None, 7),
    (S.REFERRAL, None, 10),
    (S.RECORDS_REQUESTED, None, 14),
    (S.RECORDS_RECEIVED, None, 5),
    (S.SCHEDULED, None, 9),
    (S.SEEN, None, 5),
    (S.CLOSED, S.SEEN, 32),  # completed: outcome recorded
    (S.CLOSED, S.ASSESSED, 6),
    (S.CLOSED, S.REFERRAL, 4),
    (S.CLOSED, S.RECORDS_REQUESTED, 4),
    (S.CLOSED, S.RECORDS_RECEIVED, 1.5),
    (S.CLOSED, S.SCHEDULED, 2.5),
]

# Backward moves (each adds two history rows). With the endings above they give a case
# about six history rows on average, the depth issue 8's benchmark databases ask for:
# three in four cases that reach records received find a required record missing at least
# once (outside records are the usual bottleneck of a second opinion), and about a third
# of scheduled visits are cancelled or missed and rebooked. Changing any chance or ending
# changes the rows a seed gives: bump `core.demo_limits.DATA_VERSION` with it.
MISSING_RECORD_CHANCE = 0.75
MISSING_AGAIN_CHANCE = 0.3
RESCHEDULE_CHANCE = 0.35
RESCHEDULE_AGAIN_CHANCE = 0.15
MISSING_RECORD_OPEN_CHANCE = 0.3  # an open case in records requested, sent back there
RESCHEDULE_OPEN_CHANCE = 0.25  # an open case in records received, its visit cancelled

# Close reasons by the state the case left (CloseReason), with weights.
_CLOSE_REASONS: dict[CaseState, list[tuple[CloseReason, float]]] = {
    S.ASSESSED: [(CloseReason.NOT_A_CANDIDATE, 45), (CloseReason.DECLINED, 15),
                 (CloseReason.UNREACHABLE, 25), (CloseReason.DUPLICATE, 10),
                 (CloseReason.OTHER, 5)],
    S.REFERRAL: [(CloseReason.DECLINED, 35), (CloseReason.UNREACHABLE, 20),
                 (CloseReason.TREATED_ELSEWHERE, 30), (CloseReason.OTHER, 15)],
    S.RECORDS_REQUESTED: [(CloseReason.DECLINED, 25), (CloseReason.UNREACHABLE, 20),
                          (CloseReason.TREATED_ELSEWHERE, 45), (CloseReason.OTHER, 10)],
    S.RECORDS_RECEIVED: [(CloseReason.DECLINED, 40), (CloseReason.TREATED_ELSEWHERE, 50),
                         (CloseReason.OTHER, 10)],
    S.SCHEDULED: [(CloseReason.DECLINED, 40), (CloseReason.TREATED_ELSEWHERE, 35),
                  (CloseReason.UNREACHABLE, 15), (CloseReason.OTHER, 10)],
    S.SEEN: [(CloseReason.COMPLETED, 100)],
}
_OTHER_NOTES = ["Moved out of state", "Enrolled in a clinical trial elsewhere",
                "Patient passed away", "Insurer denied coverage of the visit"]

# Van Such et al. 2017: 12 % confirmed, 66 % refined, 21 % changed (+ ~1 % not assessable).
_OUTCOMES = [(OutcomeDiagnosis.CONFIRMED, 12), (OutcomeDiagnosis.REFINED, 66),
             (OutcomeDiagnosis.CHANGED, 21), (OutcomeDiagnosis.NOT_ASSESSABLE, 1)]
_PLANS = {
    OutcomeDiagnosis.CONFIRMED: [(OutcomePlan.UNCHANGED, 88), (OutcomePlan.MINOR_CHANGE, 12)],
    OutcomeDiagnosis.REFINED: [(OutcomePlan.UNCHANGED, 40), (OutcomePlan.MINOR_CHANGE, 48),
                               (OutcomePlan.MAJOR_CHANGE, 12)],
    OutcomeDiagnosis.CHANGED: [(OutcomePlan.UNCHANGED, 8), (OutcomePlan.MINOR_CHANGE, 30),
                               (OutcomePlan.MAJOR_CHANGE, 62)],
    OutcomeDiagnosis.NOT_ASSESSABLE: [(OutcomePlan.UNCHANGED, 100)],
}
_SOURCES = [(ChangeSource.PATHOLOGY, 45), (ChangeSource.IMAGING, 25),
            (ChangeSource.NEW_BIOPSY, 10), (ChangeSource.GENETICS, 8),
            (ChangeSource.TUMOUR_BOARD, 12)]

# Diagnoses of candidates (the service reviews these three; `other` is not a candidate).
_DIAGNOSES = [(DiagnosisCategory.INVASIVE, 74), (DiagnosisCategory.DCIS, 19),
              (DiagnosisCategory.ATYPIA, 7)]
_TREATMENT = [(TreatmentStatus.NONE, 68), (TreatmentStatus.SURGERY_BOOKED, 22),
              (TreatmentStatus.TREATMENT_STARTED, 10)]
_REASONS = [(r, 1.0) for r in SecondOpinionReason]

# Patient names: mostly US, with Latin names carrying diacritics and some non-Latin
# scripts, so search, sorting and exports meet real-world text.
_LOCALES = [("en_US", 58), ("es_MX", 12), ("vi_VN", 4), ("pt_BR", 4), ("zh_CN", 4),
            ("ar_AA", 3), ("ru_RU", 3), ("ko_KR", 3), ("ja_JP", 3), ("hi_IN", 2),
            ("el_GR", 2), ("he_IL", 2)]
_NAMES_PER_LOCALE = 250

_TEAM_NAMES = ["North", "South", "East", "West", "Central", "Lakes", "Coast", "Valley",
               "Metro", "Highlands", "Harbor", "Prairie"]
_SPECIALTIES = ["Breast surgical oncology", "Medical oncology", "Radiation oncology",
                "Breast pathology", "Breast imaging"]
_INSTITUTIONS = ["Case Desk Cancer Institute", "University Breast Center",
                 "Memorial Oncology Partners", "Lakeside Comprehensive Cancer Center"]
_FACILITY_KINDS = ["Pathology", "Imaging Center", "Regional Medical Center",
                   "Community Hospital", "Breast Center", "Oncology Associates"]
_INSURERS = ["Blue Cross Blue Shield", "Aetna", "Cigna", "UnitedHealthcare", "Humana",
             "Kaiser Permanente", "Medicare", "Medicaid", "Anthem", "Oscar Health"]
_HOLD_REASONS = ["Waiting on outside pathology lab to release slides",
                 "Insurer reviewing the referral", "Patient travelling, back soon",
                 "Waiting on imaging discs by mail"]
_WAIVE_REASONS = ["Not available from the facility; specialist agreed to proceed",
                  "Specialist does not need it for this question"]
_MISSING_REASONS = ["Glass slides incomplete: block levels missing",
                    "Imaging discs unreadable", "Pathology addendum outstanding"]
_NO_SHOW = "No-show"
_CANCEL_REASONS = ["Patient cancelled", "Specialist cancelled", _NO_SHOW]

# Demo accounts: one per role, with known passwords printed by `casedesk run --demo`.
DEMO_PASSWORDS: dict[Role, str] = {
    Role.COORDINATOR: "coordinator-demo",
    Role.MANAGER: "manager-demo",
    Role.ADMIN: "admin-demo-pass",
}


@dataclass
class DemoSummary:
    seed: int
    now: datetime
    teams: int = 0
    users: int = 0
    specialists: int = 0
    patients: int = 0
    cases: int = 0
    events: int = 0
    records: int = 0
    contacts: int = 0
    seconds: float = 0.0
    by_state: dict[str, int] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Enum members -> their plain string values (also inside tuples): the hot loop
    compares and binds plain strings (psycopg would dump an Enum by its *name*)."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value.value if isinstance(value, StrEnum) else value


class _Picker:
    """Weighted choice with precomputed cumulative weights (random.choices is slower)."""

    def __init__(self, items: Sequence[tuple[Any, float]]):
        self.values = [_plain(v) for v, _ in items]
        self.cum = list(accumulate(w for _, w in items))
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random) -> Any:
        return self.values[bisect(self.cum, rng.random() * self.total)]


def _ri(rng: random.Random, low: int, high: int) -> int:
    """randint in one step (random.randint goes through three Python frames)."""
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, seq: Sequence) -> Any:
    return seq[int(rng.random() * len(seq))]


def _ascii(value: str) -> str:
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


# Plain-string states for the hot loop.
A, RF, RQ, RV, SC, SN, CL = (s.value for s in (
    S.ASSESSED, S.REFERRAL, S.RECORDS_REQUESTED, S.RECORDS_RECEIVED, S.SCHEDULED, S.SEEN,
    S.CLOSED))
FUNNEL_STR = [s.value for s in FUNNEL_ORDER]
PHASE = {s: i for i, s in enumerate(FUNNEL_STR)}
COMPLETED = CloseReason.COMPLETED.value
UNREACHABLE = CloseReason.UNREACHABLE.value
OTHER = CloseReason.OTHER.value
K = {k.name: k.value for k in RecordKind}
REQUIRED = Requirement.REQUIRED.value
NEEDED, REQUESTED, RECEIVED, WAIVED = (s.value for s in (
    RecordStatus.NEEDED, RecordStatus.REQUESTED, RecordStatus.RECEIVED, RecordStatus.WAIVED))
_WAIVABLE = {K["PRIOR_COMPARISON"], K["MEDICATION_LIST"]}
_RELEASE = K["SIGNED_RELEASE"]

TABLES = ("team", "app_user", "specialist", "patient", "cases", "case_event", "record_item",
          "contact_attempt")
COLUMNS: dict[str, list[str]] = {
    m.__tablename__: list(m.__table__.columns.keys())
    for m in (Team, User, Specialist, Patient, Case, CaseEvent, RecordItem, ContactAttempt)
}
# The three big child tables are built as tuples directly, in this column order.
assert COLUMNS["case_event"] == ["id", "case_id", "from_state", "to_state", "at", "actor_id",
                                 "reason", "days_in_from_state", "version", "team_id"]
assert COLUMNS["record_item"] == ["id", "case_id", "kind", "requirement", "facility", "status",
                                  "requested_at", "received_at", "chase_on",
                                  "tracking_number", "waive_reason", "updated_at"]
assert COLUMNS["contact_attempt"] == ["id", "case_id", "at", "actor_id", "channel", "outcome",
                                      "note", "next_try_at"]
_AS_TUPLE = {t: itemgetter(*COLUMNS[t]) for t in ("team", "app_user", "specialist", "patient",
                                                   "cases")}

Chunk = dict[str, list[tuple]]


def _insert_sql(table: str, sqlite: bool) -> str:
    cols = COLUMNS[table]
    mark = "?" if sqlite else "%s"
    return (f"INSERT INTO {table} ({', '.join(cols)}) "  # noqa: S608 - fixed names
            f"VALUES ({', '.join(mark for _ in cols)})")


def _next_id(session: Session, model: type) -> int:
    return (session.execute(select(func.max(model.id))).scalar() or 0) + 1


def validate_case_count(cases: int) -> None:
    if cases < 1:
        raise ValidationError(f"--cases must be at least 1 (got {cases}).")
    if cases > MAX_CASES:
        raise ValidationError(
            f"--cases {cases:,} is more than the demo supports ({MAX_CASES:,})."
        )


def count_cases(engine: Engine) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(Case)).scalar() or 0


def _refuse_if_not_empty(count: int) -> None:
    if count:
        raise CaseDeskError(
            f"The database already holds {count:,} cases; demo data only goes into an "
            "empty database (point CASEDESK_DATABASE_URL at a new one)."
        )


def generate_demo(
    engine: Engine,
    *,
    cases: int,
    now: datetime,
    seed: int = DEFAULT_SEED,
    holiday_country: str = "US",
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    parallel: bool | None = None,
    enforce_constraints: bool = False,
) -> DemoSummary:
    """Write a synthetic service with `cases` cases into an empty database.

    `parallel` (default: on from 20,000 cases where `fork` exists) generates rows in a
    child process while this one writes them: the same rows in the same order, on two
    cores. On SQLite the load skips per-row CHECK and foreign-key enforcement unless
    `enforce_constraints` is set: the generator is trusted, and the tests run it with both
    on (and on PostgreSQL, where they always apply).
    """
    from core.db import session_scope

    validate_case_count(cases)
    if now.tzinfo is None:
        raise ValidationError("The demo's reference time must be timezone-aware.")
    now = now.astimezone(UTC)
    started = time.perf_counter()
    with session_scope(engine) as session:
        _refuse_if_not_empty(
            session.execute(select(func.count()).select_from(Case)).scalar() or 0)
        ensure_default_rules(session, now=now)
        limits = load_limits(session)
        ids = {m.__tablename__: _next_id(session, m) for m in
               (Team, User, Specialist, Patient, Case, CaseEvent, RecordItem, ContactAttempt)}
        usernames = set(session.execute(select(User.username)).scalars().all())
        team_names = set(session.execute(select(Team.name)).scalars().all())

    sqlite = engine.dialect.name == "sqlite"
    gen = _Generator(seed=seed, now=now, limits=limits, holiday_country=holiday_country,
                     sqlite=sqlite, ids=ids)
    staff = gen.staff(cases, usernames=usernames, team_names=team_names)
    sizes = [min(chunk, cases - done) for done in range(0, cases, chunk)]
    if parallel is None:
        parallel = cases >= 20_000 and "fork" in mp.get_all_start_methods()
    chunks = _forked_chunks(gen, sizes) if parallel else (gen.make_chunk(n) for n in sizes)
    summary = DemoSummary(seed=seed, now=now, teams=len(staff["team"]),
                          users=len(staff["app_user"]), specialists=len(staff["specialist"]))

    def write_all(execmany: Callable[[str, list[tuple]], None]) -> None:
        for table in ("team", "app_user", "specialist"):
            if staff[table]:
                execmany(_insert_sql(table, sqlite), staff[table])
        done = 0
        for rows in chunks:
            for table in ("patient", "cases", "case_event", "record_item", "contact_attempt"):
                if rows[table]:
                    execmany(_insert_sql(table, sqlite), rows[table])
            summary.patients += len(rows["patient"])
            summary.cases += len(rows["cases"])
            summary.events += len(rows["case_event"])
            summary.records += len(rows["record_item"])
            summary.contacts += len(rows["contact_attempt"])
            for state, n in rows["by_state"]:
                summary.by_state[state] = summary.by_state.get(state, 0) + n
            done += len(rows["cases"])
            if progress:
                progress(done, cases)

    if sqlite:
        _write_sqlite(engine, write_all, enforce_constraints)
    else:
        with session_scope(engine) as session:
            conn = session.connection()
            _refuse_if_not_empty(
                session.execute(select(func.count()).select_from(Case)).scalar() or 0)
            write_all(lambda sql, rows: conn.exec_driver_sql(sql, rows))
            for table in TABLES:
                # Ids were assigned here; move each sequence past them.
                session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT MAX(id) FROM {table}))"
                ))
    with session_scope(engine) as session:
        audit.record(session, actor=Actor.system("demo"), action="demo.seed", now=now,
                     detail={"seed": seed, "cases": cases, "events": summary.events,
                             "records": summary.records})
    refresh_statistics(engine)
    summary.seconds = time.perf_counter() - started
    return summary


# Kept here under its old name for callers of the demo module.
refresh_statistics = refresh_planner_statistics


def _write_sqlite(engine: Engine, write_all: Callable, enforce_constraints: bool) -> None:
    """One IMMEDIATE transaction on a raw connection: pragmas that cannot change inside
    a transaction (foreign_keys) are set first, and restored before it goes back to the
    pool."""
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if not enforce_constraints:
            dbapi.execute("PRAGMA foreign_keys=OFF")
            dbapi.execute("PRAGMA ignore_check_constraints=ON")
        dbapi.execute("PRAGMA cache_size=-262144")  # 256 MB: index inserts stay in memory
        dbapi.execute("BEGIN IMMEDIATE")
        try:
            _refuse_if_not_empty(dbapi.execute("SELECT count(*) FROM cases").fetchone()[0])
            cur = dbapi.cursor()
            write_all(cur.executemany)
            dbapi.execute("COMMIT")
        except BaseException:
            dbapi.execute("ROLLBACK")
            raise
        finally:
            dbapi.execute("PRAGMA cache_size=-2000")
            dbapi.execute("PRAGMA ignore_check_constraints=OFF")
            dbapi.execute("PRAGMA foreign_keys=ON")
    finally:
        raw.close()


def _produce(gen: _Generator, sizes: list[int], queue: Any) -> None:  # pragma: no cover
    try:
        for n in sizes:
            queue.put(gen.make_chunk(n))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(RuntimeError(f"demo generator failed: {exc!r}"))


def _forked_chunks(gen: _Generator, sizes: list[int]) -> Iterator[Chunk]:
    """Chunks made by a forked child (a copy of `gen`, seeded state and all), so the rows
    are exactly those the in-process path would make."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue(maxsize=3)
    child = ctx.Process(target=_produce, args=(gen, sizes, queue), daemon=True)
    child.start()
    try:
        for _ in sizes:
            while True:
                try:
                    item = queue.get(timeout=1)
                    break
                except Empty:
                    if not child.is_alive():
                        raise RuntimeError("the demo generator process died") from None
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if child.is_alive():
            child.terminate()
        child.join(timeout=5)


class _Generator:
    """Makes rows; never touches the database (it may run in a forked child)."""

    def __init__(self, *, seed: int, now: datetime, limits: dict[str, SlaLimit],
                 holiday_country: str, sqlite: bool, ids: dict[str, int]):
        self.rng = random.Random(seed)
        # Naive UTC inside the hot loop (formatting a naive datetime is about twice as
        # fast); `ts` puts the zone back where the driver needs it.
        self.now = now.astimezone(UTC).replace(tzinfo=None)
        self.limits = limits
        self.limit_days = {s: float(v.days) for s, v in limits.items()}
        self.country = holiday_country
        self.sqlite = sqlite
        self.ids = dict(ids)
        self.team_ids: list[int] = []
        self.coordinators: dict[int, list[int]] = {}
        self.specialist_ids: list[int] = []
        self._templates: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self._pickers()
        self._name_pools(seed)

    def ts(self, value: datetime | None) -> Any:
        """Driver form: SQLite gets SQLAlchemy's own text format (UTC, no offset)."""
        if value is None:
            return None
        if self.sqlite:
            return value.isoformat(" ", "microseconds")[:26]
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def day(self, value: date | None) -> Any:
        if value is None:
            return None
        return value.isoformat() if self.sqlite else value

    # --- set-up -------------------------------------------------------------------------

    def _pickers(self) -> None:
        self.pick_ending = _Picker([((s, f), w) for s, f, w in _ENDINGS])
        self.pick_close = {s.value: _Picker(v) for s, v in _CLOSE_REASONS.items()}
        self.pick_outcome = _Picker(_OUTCOMES)
        self.pick_plan = {k.value: _Picker(v) for k, v in _PLANS.items()}
        self.pick_source = _Picker(_SOURCES)
        self.pick_dx = _Picker(_DIAGNOSES)
        self.pick_treatment = _Picker(_TREATMENT)
        self.pick_reason = _Picker(_REASONS)
        self.pick_locale = _Picker([(i, w) for i, (_, w) in enumerate(_LOCALES)])

    def _name_pools(self, seed: int) -> None:
        from faker import Faker

        self.first_names: list[list[tuple[str, str]]] = []
        self.last_names: list[list[tuple[str, str]]] = []
        for i, (locale, _) in enumerate(_LOCALES):
            fk = Faker(locale)
            fk.seed_instance(seed * 1000 + i)
            # (name, ASCII fold for e-mail addresses; empty for non-Latin scripts)
            self.first_names.append([(n, _ascii(n)) for n in
                                     (fk.first_name_female() for _ in range(_NAMES_PER_LOCALE))])
            self.last_names.append([(n, _ascii(n)) for n in
                                    (fk.last_name() for _ in range(_NAMES_PER_LOCALE))])
        us = Faker("en_US")
        us.seed_instance(seed)
        self.addresses = [(us.street_address(), us.city(), us.state_abbr(), us.zipcode())
                          for _ in range(600)]
        self.staff_names = [(us.first_name(), us.last_name()) for _ in range(1200)]
        self.facilities = [f"{us.city()} {_pick(self.rng, _FACILITY_KINDS)}"
                           for _ in range(80)]

    def _id(self, table: str) -> int:
        value = self.ids[table]
        self.ids[table] = value + 1
        return value

    def staff(self, cases: int, *, usernames: set[str], team_names: set[str]) -> Chunk:
        rng, now = self.rng, self.now
        created = self.ts(now - timedelta(days=540))
        n_teams = max(2, min(len(_TEAM_NAMES), round(cases / 8000) + 1))
        per_team = max(2, min(40, round(cases * 0.5 / n_teams / 50)))
        taken = set(usernames)
        team_rows, user_rows, spec_rows = [], [], []
        names = iter(self.staff_names * 4)

        def username(first: str, last: str) -> str:
            base = f"{_ascii(first)[:1]}{_ascii(last)[:20]}" or "user"
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}{n}"
            return name

        def add_user(role: Role, team_id: int | None, preferred: str | None) -> int:
            first, last = next(names)
            uname = preferred if preferred and preferred not in taken else username(first, last)
            taken.add(uname)
            uid = self._id("app_user")
            user_rows.append(dict(
                id=uid, username=uname, full_name=f"{first} {last}",
                email=f"{uname}@casedesk.example", role=role.value, team_id=team_id,
                password_hash=None, is_active=True, failed_logins=0, locked_until=None,
                password_changed_at=None, last_login_at=None, created_at=created))
            return uid

        for t in range(n_teams):
            tid = self._id("team")
            name = f"Breast {_TEAM_NAMES[t]}"
            if name in team_names:
                name = f"{name} (demo)"
            team_rows.append(dict(id=tid, name=name, created_at=created))
            self.team_ids.append(tid)
        # The first team's first coordinator and manager, and the admin, carry the demo
        # account names, so signing in as them shows a real workload.
        for t, tid in enumerate(self.team_ids):
            add_user(Role.MANAGER, tid, "manager" if t == 0 else None)
            self.coordinators[tid] = [
                add_user(Role.COORDINATOR, tid, "coordinator" if t == 0 and i == 0 else None)
                for i in range(per_team)
            ]
        add_user(Role.ADMIN, None, "admin")
        for i in range(max(6, min(60, n_teams * 5))):
            first, last = next(names)
            sid = self._id("specialist")
            spec_rows.append(dict(
                id=sid, name=f"Dr. {first} {last}", specialty=_SPECIALTIES[i % len(_SPECIALTIES)],
                institution=_pick(rng, _INSTITUTIONS), telehealth=rng.random() < 0.8,
                is_active=True))
            self.specialist_ids.append(sid)
        return {"team": [_AS_TUPLE["team"](r) for r in team_rows],
                "app_user": [_AS_TUPLE["app_user"](r) for r in user_rows],
                "specialist": [_AS_TUPLE["specialist"](r) for r in spec_rows]}

    # --- cases --------------------------------------------------------------------------

    def _stage_days(self, state: str) -> float:
        """Time a case spent in a stage it has left: around 55 % of the limit, about one
        in nine over it."""
        return max(0.02, self.limit_days[state] * self.rng.lognormvariate(-0.6, 0.5))

    def _current_days(self, state: str) -> float:
        """Time so far in the current state: most in time, some due soon, some stalled
        (past 100 % of the limit), a few escalated (past 150 %)."""
        rng = self.rng
        u = rng.random()
        if u < 0.55:
            f = rng.uniform(0.02, 0.75)
        elif u < 0.75:
            f = rng.uniform(0.75, 1.0)
        elif u < 0.92:
            f = rng.uniform(1.0, 1.5)
        else:
            f = rng.uniform(1.5, 4.0)
        return self.limit_days[state] * f

    def _path(self, last: str) -> list[str]:
        """States visited, in order, ending in the open state `last`."""
        rng = self.rng
        end = PHASE[last]
        path = [A]
        for idx in range(1, end + 1):
            state = FUNNEL_STR[idx]
            path.append(state)
            if state == RV and end > 3:
                # Outside records are often incomplete: a required record turns out
                # missing (a slide block, an imaging disc) once the set is reviewed, and
                # now and then again after the second request.
                chance = MISSING_RECORD_CHANCE
                while rng.random() < chance:
                    path += [RQ, RV]
                    chance = MISSING_AGAIN_CHANCE
            if state == SC and end > 4:
                chance = RESCHEDULE_CHANCE  # no-show or cancelled, then rebooked
                while rng.random() < chance:
                    path += [RV, SC]
                    chance = RESCHEDULE_AGAIN_CHANCE
        if last == RQ and rng.random() < MISSING_RECORD_OPEN_CHANCE:
            path += [RV, RQ]  # waiting on the record found missing
        elif last == RV and rng.random() < RESCHEDULE_OPEN_CHANCE:
            path += [SC, RV]  # waiting to rebook
        return path

    def make_chunk(self, n: int) -> Chunk:
        out: Chunk = {t: [] for t in ("patient", "cases", "case_event", "record_item",
                                      "contact_attempt")}
        counts: dict[str, int] = {}
        for _ in range(n):
            state = self._one_case(out)
            counts[state] = counts.get(state, 0) + 1
        out["by_state"] = sorted(counts.items())
        return out

    def _one_case(self, out: Chunk) -> str:
        rng, now, ts = self.rng, self.now, self.ts
        state, closed_from = self.pick_ending(rng)
        last_open = closed_from or state
        path = self._path(last_open)

        # Times: an open case's current stage has run for a while up to `now`; a closed
        # case closed at some point in the past year.
        close_reason = None
        if state == CL:
            close_reason = self.pick_close[closed_from](rng)
            if close_reason == COMPLETED:
                final_days = self._stage_days(SN)  # outcome recorded, then closed
            else:
                final_days = self._stage_days(closed_from) * rng.uniform(0.3, 1.2)
            end = now - timedelta(days=rng.uniform(0.1, 365))
            path.append(CL)
            durations = [self._stage_days(st) for st in path[:-2]] + [final_days]
            last_entered = end
        else:
            end = now
            durations = [self._stage_days(st) for st in path[:-1]]
            last_entered = now - timedelta(days=self._current_days(state))
        # A scheduled stage lasts until the appointment: 3-14 days ahead, seen soon after.
        for i in range(len(durations)):
            if path[i] == SC and path[i + 1] == SN:
                durations[i] = rng.uniform(3, 14) + rng.uniform(0.05, 0.9)
        times = [last_entered]
        for d in reversed(durations):
            times.append(times[-1] - timedelta(days=d))
        times.reverse()  # times[i]: when path[i] was entered
        assessed_at = times[0]
        assessed_ts = ts(assessed_at)

        case_id = self._id("cases")
        patient_id = self._id("patient")
        team_id = self.team_ids[int(rng.random() * len(self.team_ids))]
        team_coords = self.coordinators[team_id]
        assignee = team_coords[int(rng.random() * len(team_coords))]
        if state == A and rng.random() < 0.2:
            assignee = None  # waiting for a coordinator to pick it up
        actor = assignee if assignee is not None else team_coords[0]

        # --- patient
        loc = self.pick_locale(rng)
        first, first_ascii = self.first_names[loc][int(rng.random() * _NAMES_PER_LOCALE)]
        last, last_ascii = self.last_names[loc][int(rng.random() * _NAMES_PER_LOCALE)]
        street, city, region, zip_code = self.addresses[int(rng.random() * len(self.addresses))]
        email = None
        if rng.random() < 0.6:
            email = (f"{first_ascii}.{last_ascii}{patient_id}@example.com"
                     if first_ascii and last_ascii else f"patient{patient_id}@example.org")
        age_days = int(rng.uniform(28, 86) * 365.25)
        out["patient"].append(_AS_TUPLE["patient"](dict(
            id=patient_id, mrn=f"CD{patient_id:08d}", first_name=first, last_name=last,
            search_name=search_key(f"{first} {last}"),
            date_of_birth=self.day(assessed_at.date() - timedelta(days=age_days)),
            phone=f"({_ri(rng, 201, 989)}) 555-{_ri(rng, 0, 9999):04d}", email=email,
            address_line=street, city=city, region=region, zip_code=zip_code,
            created_at=assessed_ts)))

        # --- intake
        if close_reason == NOT_A_CANDIDATE or (state == A and rng.random() < 0.05):
            # The assessment's own rules decide candidacy: only cases that never left
            # `assessed` may be outside the diagnoses the service reviews.
            dx = _OTHER_DX if rng.random() < 0.7 else self.pick_dx(rng)
        else:
            dx = self.pick_dx(rng)
        treatment = self.pick_treatment(rng)
        biopsy = assessed_at.date() - timedelta(days=_ri(rng, 3, 35))
        planned = None
        if treatment == _SURGERY_BOOKED:
            planned = assessed_at.date() + timedelta(days=_ri(rng, 14, 50))
        if state in (RF, RQ, RV) and rng.random() < 0.15:
            # Close to the planned treatment: the deadline-risk cases.
            treatment = _SURGERY_BOOKED
            planned = now.date() + timedelta(days=_ri(rng, 3, 21))
        reasons = sorted({self.pick_reason(rng) for _ in range(1 + (rng.random() < 0.4))})
        assessment = candidacy(diagnosis_category=dx, biopsy_date=biopsy,
                               treatment_status=treatment, planned_treatment_start=planned,
                               reasons=reasons, today=assessed_at.date())
        urgent = assessment.urgent
        biopsy_fac = self.facilities[int(rng.random() * len(self.facilities))]
        imaging_fac = (biopsy_fac if rng.random() < 0.3
                       else self.facilities[int(rng.random() * len(self.facilities))])
        insurer = _INSURERS[int(rng.random() * len(_INSURERS))]
        referral_required = rng.random() < 0.4
        phase = PHASE[last_open]
        if not referral_required:
            referral_status = _REF_NOT_REQUIRED
        elif phase == 0:
            referral_status = _REF_PENDING
        elif phase == 1:
            u = rng.random()
            referral_status = (_REF_PENDING if u < 0.6 else _REF_OBTAINED if u < 0.95
                               else _REF_DENIED)
        else:
            referral_status = _REF_OBTAINED
        specialist = None
        if phase >= 2 or (phase == 1 and rng.random() < 0.5):
            specialist = self.specialist_ids[int(rng.random() * len(self.specialist_ids))]

        # --- history: one event per move, the intake row first
        events = out["case_event"]
        no_shows = 0
        events.append((self._id("case_event"), case_id, None, A, assessed_ts, None, None, None,
                       1, team_id))
        for i in range(1, len(path)):
            frm, to = path[i - 1], path[i]
            reason = None
            if to == CL:
                reason = close_reason.replace("_", " ")
            elif frm == RV and to == RQ:
                reason = _pick(rng, _MISSING_REASONS)
            elif frm == SC and to == RV:
                reason = _pick(rng, _CANCEL_REASONS)
                no_shows += reason == _NO_SHOW
            events.append((self._id("case_event"), case_id, frm, to, ts(times[i]), actor,
                           reason, round((times[i] - times[i - 1]).total_seconds() / 86400, 4),
                           i + 1, team_id))
        state_entered = times[-1]

        # --- appointment, outcome, hold
        appointment = mode = None
        last_open_idx = len(path) - 1 - (state == CL)
        if last_open == SC:
            appointment = times[last_open_idx] + timedelta(days=rng.uniform(3, 14))
            if state != CL and appointment < now and rng.random() < 0.7:
                appointment = now + timedelta(days=rng.uniform(0.2, 5))  # rebooked ahead
        elif last_open == SN:
            appointment = times[last_open_idx] - timedelta(hours=rng.uniform(1, 20))
        if appointment is not None:
            mode = _TELEHEALTH if rng.random() < 0.45 else _IN_PERSON
        outcome_at = None
        if close_reason == COMPLETED:
            outcome_at = end - timedelta(minutes=rng.uniform(1, 240))
        elif state == SN and rng.random() < 0.25:
            outcome_at = state_entered + (now - state_entered) * rng.random()
        diagnosis = plan = sources = extra = None
        if outcome_at is not None:
            diagnosis = self.pick_outcome(rng)
            plan = self.pick_plan[diagnosis](rng)
            if diagnosis in (_REFINED, _CHANGED) or plan != _UNCHANGED:
                sources = ",".join(sorted({self.pick_source(rng)
                                           for _ in range(1 + (rng.random() < 0.35))}))
            extra = rng.random() < (0.12 if diagnosis == _CHANGED else 0.03)
        on_hold = state in (RF, RQ, SC) and rng.random() < 0.04
        hold_reason = hold_started = hold_until = None
        if on_hold:
            hold_reason = _pick(rng, _HOLD_REASONS)
            hold_started = ts(state_entered + (now - state_entered) * 0.5)
            hold_until = self.day(now.date() + timedelta(days=_ri(rng, 1, 14)))
        deadlines = sla_deadlines(
            state=state, state_entered_at=state_entered, paused_seconds=0, on_hold=on_hold,
            outcome_recorded=outcome_at is not None, limits=self.limits,
            holiday_country=self.country)
        updated = state_entered if outcome_at is None else max(state_entered, outcome_at)
        state_entered_ts = ts(state_entered)

        out["cases"].append(_AS_TUPLE["cases"](dict(
            id=case_id, patient_id=patient_id, team_id=team_id, assignee_id=assignee,
            state=state, version=len(path), priority=_URGENT if urgent else _ROUTINE,
            cancer_type="breast", diagnosis_category=dx, biopsy_date=self.day(biopsy),
            treatment_status=treatment, planned_treatment_start=self.day(planned),
            second_opinion_reasons=",".join(reasons), biopsy_facility=biopsy_fac,
            imaging_facility=imaging_fac, telehealth_preferred=rng.random() < 0.4,
            candidacy_reasons=assessment.summary[:DETAIL_MAX],
            assessed_at=assessed_ts, insurer=insurer,
            insurance_member_id=f"{insurer[:3].upper()}{_ri(rng, 10**8, 10**9 - 1)}",
            referral_required=referral_required, referral_status=referral_status,
            authorization_number=(f"AUTH-{_ri(rng, 10**6, 10**7 - 1)}"
                                  if referral_status == _REF_OBTAINED else None),
            specialist_id=specialist, appointment_at=ts(appointment), appointment_mode=mode,
            no_show_count=no_shows, on_hold=on_hold, hold_reason=hold_reason,
            hold_started_at=hold_started, hold_until=hold_until, paused_seconds=0,
            state_entered_at=state_entered_ts, due_soon_at=ts(deadlines.due_soon_at),
            due_at=ts(deadlines.due_at), escalate_at=ts(deadlines.escalate_at),
            outcome_diagnosis=diagnosis, outcome_plan=plan, outcome_sources=sources,
            additional_cancer_found=extra, outcome_recorded_at=ts(outcome_at),
            close_reason=close_reason,
            close_note=_pick(rng, _OTHER_NOTES) if close_reason == OTHER else None,
            closed_from_state=closed_from, created_at=assessed_ts,
            updated_at=state_entered_ts if updated is state_entered else ts(updated),
            updated_by_id=actor, flag_rank=0,  # the demo has no flags until a scan
            furthest_rank=max(PHASE.get(st, 0) for st in path),
            # new to the scan; failed_contacts is counted by the contact_attempt triggers
            # as the attempts below are inserted (migration 0005)
            scan_dirty=True, failed_contacts=0)))

        self._records(out["record_item"], case_id, path, times, end, phase, biopsy_fac,
                      imaging_fac, dx, treatment)
        self._contacts(out["contact_attempt"], case_id, path, times, end, close_reason, actor)
        return state

    def _checklist(self, dx: str, treatment: str, biopsy_fac: str, imaging_fac: str
                   ) -> tuple[list[tuple[str, str, str]], list[str]]:
        """(kind, requirement, facility) per template item, and the facilities that need
        a signed release, as `core.workflows.records.build_checklist` makes them."""
        template = self._templates.get((dx, treatment))
        if template is None:
            template = [(t.kind.value, t.requirement.value, t.source) for t in
                        checklist_template(diagnosis_category=dx, treatment_status=treatment)]
            self._templates[(dx, treatment)] = template
        items, facilities = [], []
        for kind, requirement, source in template:
            facility = facility_for(source, biopsy_facility=biopsy_fac,
                                    imaging_facility=imaging_fac)
            items.append((kind, requirement, facility))
            if facility != PATIENT_SOURCE and facility not in facilities:
                facilities.append(facility)
        return items, facilities

    def _records(self, out: list, case_id: int, path: list[str], times: list[datetime],
                 end: datetime, phase: int, biopsy_fac: str, imaging_fac: str, dx: str,
                 treatment: str) -> None:
        """The checklist (DESIGN.md section 6; the workflow's own template, made at
        intake) with statuses that fit the furthest state the case reached: all needed
        while assessed, the signed releases coming in during referral, about half in and
        the rest being chased in records_requested, every required item received or
        waived from records_received on."""
        rng, ts = self.rng, self.ts
        items, facilities = self._checklist(dx, treatment, biopsy_fac, imaging_fac)
        if phase == 0:  # the checklist is made at intake: everything still needed
            updated = ts(times[0])
            for kind, requirement, facility in items:
                out.append((self._id("record_item"), case_id, kind, requirement, facility,
                            NEEDED, None, None, None, None, None, updated))
            return
        referral_at = times[1]
        # Signed releases, one per source facility, come in during the referral stage
        # (a guard of "request records").
        release_by = times[2] if phase >= 2 else end
        for facility in facilities:
            req_at = referral_at + (release_by - referral_at) * rng.uniform(0.01, 0.4)
            if phase >= 2 or rng.random() < 0.5:
                rec_at = req_at + (release_by - req_at) * rng.uniform(0.1, 0.95)
                out.append((self._id("record_item"), case_id, _RELEASE, REQUIRED,
                            facility, RECEIVED, ts(req_at), ts(rec_at), None, None, None,
                            ts(rec_at)))
            else:
                out.append((self._id("record_item"), case_id, _RELEASE, REQUIRED,
                            facility, REQUESTED, ts(req_at), None,
                            self.day((req_at + timedelta(days=3)).date()), None, None,
                            ts(req_at)))
        if phase < 2:
            updated = ts(referral_at)
            for kind, requirement, facility in items:
                out.append((self._id("record_item"), case_id, kind, requirement, facility,
                            NEEDED, None, None, None, None, None, updated))
            return
        requested_at = times[2]  # first entry into records_requested
        complete_at = times[3] if phase >= 3 else None  # first entry into records_received
        # Back from records_received for a missing record: the slides are re-requested.
        rerequest = phase == 2 and RV in path
        slides = K["GLASS_SLIDES"]
        for kind, requirement, facility in items:
            req_at = requested_at + timedelta(hours=rng.uniform(0.2, 12))
            if req_at > end:
                req_at = end
            rec_at = waive = None
            if rerequest and kind == slides:
                req_at = min(end, times[-1] + timedelta(hours=rng.uniform(0.1, 6)))
                status = REQUESTED
            elif complete_at is not None:
                u = rng.random()
                if requirement == REQUIRED:
                    if kind in _WAIVABLE and u < 0.04:
                        status, waive = WAIVED, _pick(rng, _WAIVE_REASONS)
                    else:
                        status = RECEIVED
                elif u < 0.8:
                    status = RECEIVED
                elif u < 0.9:
                    status, waive = WAIVED, _pick(rng, _WAIVE_REASONS)
                else:
                    status = REQUESTED
                if status == RECEIVED:
                    stop = complete_at if requirement == REQUIRED else end
                    rec_at = req_at + (stop - req_at) * rng.uniform(0.05, 0.98) \
                        if stop > req_at else req_at
            elif rng.random() < 0.5:
                status = RECEIVED
                rec_at = req_at + (end - req_at) * rng.uniform(0.05, 0.95)
            else:
                status = REQUESTED
            req_ts = ts(req_at)
            rec_ts = ts(rec_at)
            out.append((self._id("record_item"), case_id, kind, requirement, facility, status,
                        req_ts, rec_ts,
                        self.day((req_at + timedelta(days=5)).date()) if status == REQUESTED
                        else None,
                        f"1Z{_ri(rng, 10**11, 10**12 - 1)}" if kind == slides else None,
                        waive, rec_ts or req_ts))

    def _contacts(self, out: list, case_id: int, path: list[str], times: list[datetime],
                  end: datetime, close_reason: str | None, actor: int) -> None:
        """First-contact calls in the assessed stage, an appointment confirmation call,
        and the run of failed attempts that ends in an 'unreachable' close."""
        rng, ts = self.rng, self.ts

        def attempt(at: datetime, ok: bool) -> None:
            channel = _PHONE if rng.random() < 0.8 else _pick(rng, _OTHER_CHANNELS)
            if ok:
                outcome = _REACHED
            elif channel == _PHONE:
                outcome = _VOICEMAIL if rng.random() < 0.6 else _NO_ANSWER
            else:
                outcome = _NO_ANSWER if rng.random() < 0.9 else _BOUNCED
            out.append((self._id("contact_attempt"), case_id, ts(at), actor, channel, outcome,
                        None, None if ok else ts(at + timedelta(days=1))))

        def spread(start: datetime, stop: datetime, k: int) -> list[datetime]:
            span = max((stop - start).total_seconds(), 60.0)
            return sorted(start + timedelta(seconds=span * rng.uniform(0.02, 0.98))
                          for _ in range(k))

        if close_reason == UNREACHABLE:
            for at in spread(times[-2], end, _ri(rng, 3, 5)):
                attempt(at, False)
            return
        if len(path) == 1:  # still assessed: calls so far, maybe none answered yet
            failures = _pick(rng, (0, 0, 1, 1, 2, 3, 3, 4))
            for at in spread(times[0], end, failures):
                attempt(at, False)
            if failures < 3 and rng.random() < 0.4:
                attempt(end - timedelta(minutes=rng.uniform(1, 60)), True)
            return
        failures = _pick(rng, (0, 0, 0, 1, 1, 2))
        ats = spread(times[0], times[1], failures + 1)
        for at in ats[:-1]:
            attempt(at, False)
        attempt(ats[-1], True)
        if SC in path and rng.random() < 0.5:
            i = path.index(SC)
            stop = times[i + 1] if i + 1 < len(times) else end
            attempt(times[i] + (stop - times[i]) * rng.uniform(0.1, 0.9), True)


_SURGERY_BOOKED = TreatmentStatus.SURGERY_BOOKED.value
_OTHER_DX = DiagnosisCategory.OTHER.value
NOT_A_CANDIDATE = CloseReason.NOT_A_CANDIDATE.value
_REF_NOT_REQUIRED, _REF_PENDING, _REF_OBTAINED, _REF_DENIED = (r.value for r in (
    ReferralStatus.NOT_REQUIRED, ReferralStatus.PENDING, ReferralStatus.OBTAINED,
    ReferralStatus.DENIED))
_TELEHEALTH, _IN_PERSON = AppointmentMode.TELEHEALTH.value, AppointmentMode.IN_PERSON.value
_REFINED, _CHANGED = OutcomeDiagnosis.REFINED.value, OutcomeDiagnosis.CHANGED.value
_UNCHANGED = OutcomePlan.UNCHANGED.value
_URGENT, _ROUTINE = Priority.URGENT.value, Priority.ROUTINE.value
_PHONE = ContactChannel.PHONE.value
_OTHER_CHANNELS = (ContactChannel.EMAIL.value, ContactChannel.SMS.value,
                   ContactChannel.PORTAL.value)
_REACHED, _VOICEMAIL, _NO_ANSWER, _BOUNCED = (o.value for o in (
    ContactOutcome.REACHED, ContactOutcome.VOICEMAIL, ContactOutcome.NO_ANSWER,
    ContactOutcome.BOUNCED))


# --- demo accounts ------------------------------------------------------------------------


def ensure_demo_accounts(session: Session, now: datetime, *,
                         demo_mode: bool | None = None) -> dict[Role, tuple[str, str]]:
    """One account per role with a known password; returns {role: (username, password)}.

    Existing users named `coordinator`, `manager`, `admin` (the demo generator creates
    them without passwords) get the demo password; missing ones are created. Refused
    unless demo mode is on: known passwords must never reach a real service.
    """
    from core.config import get_settings
    from core.users import hash_password

    if demo_mode is None:
        demo_mode = get_settings().demo_mode
    if not demo_mode:
        raise CaseDeskError("Demo accounts exist only in demo mode (CASEDESK_DEMO_MODE=true).")
    team = session.execute(select(Team).order_by(Team.id).limit(1)).scalars().first()
    if team is None:
        team = Team(name="Demo team", created_at=now)
        session.add(team)
        session.flush()
    result: dict[Role, tuple[str, str]] = {}
    for role, password in DEMO_PASSWORDS.items():
        username = role.value
        user = session.execute(select(User).where(User.username == username)).scalars().first()
        if user is None:
            user = User(username=username, full_name=f"Demo {role.value}", role=role.value,
                        team_id=None if role is Role.ADMIN else team.id, created_at=now)
        user.password_hash = hash_password(password)
        user.password_changed_at = now
        user.is_active = True
        user.failed_logins = 0
        user.locked_until = None
        session.add(user)
        session.flush()
        audit.record(session, actor=Actor.system("demo"), action="user.demo_account", now=now,
                     detail={"user_id": user.id, "role": role.value})
        result[role] = (username, password)
    return result
