"""CSV exports: safe to open (no formula survives), safe to share (no identifier in a
de-identified file), streamed, audited, and the same rows the analytics pages count."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pandas as pd
import pytest
from sqlmodel import select

from core import analytics
from core.analytics import CaseFilter
from core.db import session_scope
from core.errors import PermissionDenied, ValidationError
from core.exports import (
    BOM,
    FORMULA_TRIGGERS,
    ExportKind,
    ExportRequest,
    cell,
    export_to_file,
    neutralise,
)
from core.models import AuditEntry
from core.validation import BIDI_CONTROLS, ZERO_WIDTH
from tests.exports.hostile import HOSTILE, NON_LATIN, NOTE, seed_hostile
from tests.factories import actor_for


@pytest.fixture
def hostile(engine, now):
    with session_scope(engine) as session:
        return seed_hostile(session, now)


NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")


def read_back(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def assert_safe(value: str) -> None:
    """The invariant: the first meaningful character of a cell is never a formula
    trigger, unless the cell was neutralised with a leading apostrophe."""
    assert not BIDI_CONTROLS.search(value), repr(value)
    if value.startswith("'") or NUMBER.fullmatch(value):
        return  # neutralised, or a plain number (which a spreadsheet reads as a number)
    for ch in value:
        assert ch not in FORMULA_TRIGGERS, repr(value)
        if ch.isspace() or ZERO_WIDTH.match(ch):
            continue
        break


# --- the cell rules themselves ------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_every_hostile_value_is_neutralised(value):
    out = neutralise(value)
    assert out.startswith("'")
    assert_safe(out)
    assert not BIDI_CONTROLS.search(out)


@pytest.mark.parametrize("value", ["Ana Silva", "O'Brien", "1-800 number", "a=b", "李小龙",
                                   "", "Zoë"])
def test_harmless_text_is_left_alone(value):
    assert neutralise(value) == value


def test_real_numbers_stay_numbers_and_text_that_looks_like_one_does_not():
    assert cell(-3) == "-3"
    assert cell(-2.5) == "-2.5"
    assert cell(2.125) == "2.125"
    assert cell(True) == "true"
    assert cell("-3") == "'-3"


# --- whole files ---------------------------------------------------------------------------


def test_identified_export_reads_back_row_for_row_with_every_cell_neutralised(
        engine, hostile, now, tmp_path):
    manager = actor_for(hostile.manager_a)
    path = tmp_path / "cases.csv"
    result = export_to_file(engine, manager, ExportRequest(
        ExportKind.CASES, identified=True, reason="Tumour board audit, =1+2"), path, now=now)
    raw = path.read_bytes()
    assert raw.startswith(BOM.encode("utf-8"))
    assert hashlib.sha256(raw).hexdigest() == result.sha256
    df = read_back(path)
    team_a_cases = [c for i, c in enumerate(hostile.cases) if i % 4]
    assert df["case_id"].astype(int).tolist() == team_a_cases  # the manager's team only
    assert result.rows == len(df)
    for value in df.to_numpy().ravel():
        assert_safe(value)
    by_id = df.set_index(df["case_id"].astype(int))
    first = by_id.loc[hostile.cases[1]]
    assert first["first_name"] == "'" + HOSTILE[1]
    assert first["days_biopsy_to_assessment"] == "-3"  # a real negative number
    assert by_id.loc[hostile.cases[11], "insurer"] == "'=1+2"  # RLO stripped, then neutralised
    closed = by_id[by_id["state"] == "closed"]
    assert all(v.startswith(NOTE) for v in closed["close_note"])  # quotes and newlines kept
    names = set(zip(df["first_name"], df["last_name"], strict=True))
    for first_name, last_name in NON_LATIN:
        if hostile.cases[HOSTILE.__len__() + NON_LATIN.index((first_name, last_name))] in \
                by_id.index:
            assert (first_name, last_name) in names
    assert set(df["timezone"]) == {"UTC"}
    assert df["assessed_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00").all()
    numeric = pd.read_csv(path, encoding="utf-8-sig")
    assert pd.api.types.is_integer_dtype(numeric["no_show_count"])
    assert pd.api.types.is_numeric_dtype(numeric["days_biopsy_to_assessment"])


def test_identified_events_keep_notes_with_newlines_and_neutralise_reasons(
        engine, hostile, now, tmp_path):
    admin = actor_for(hostile.admin)
    path = tmp_path / "events.csv"
    export_to_file(engine, admin, ExportRequest(ExportKind.EVENTS, identified=True,
                                                reason="data request 12"), path, now=now)
    df = read_back(path)
    assert len(df) == 2 * len(hostile.cases)
    for value in df.to_numpy().ravel():
        assert_safe(value)
    assert (df[df["event_no"] == "2"]["reason"] == NOTE).all()
    assert df[df["event_no"] == "1"]["reason"].str.startswith("'").all()


@pytest.mark.parametrize("kind", [ExportKind.CASES, ExportKind.EVENTS, ExportKind.STAGE_TIMES])
def test_deidentified_export_contains_no_seeded_identifier(engine, hostile, now, tmp_path,
                                                            kind):
    path = tmp_path / f"{kind.value}.csv"
    export_to_file(engine, actor_for(hostile.admin), ExportRequest(kind), path, now=now)
    text = path.read_text(encoding="utf-8-sig")
    for identifier in hostile.identifiers:
        assert identifier not in text, identifier
    assert NOTE.splitlines()[0] not in text  # free text may hold identifiers: left out
    df = read_back(path)
    for value in df.to_numpy().ravel():
        assert_safe(value)
    if kind is not ExportKind.STAGE_TIMES:
        assert len(df) == len(hostile.cases) * (1 if kind is ExportKind.CASES else 2)
        year_cols = [c for c in df.columns if "year" in c]
        assert year_cols and all(df[c].str.fullmatch(r"(\d{4})?").all() for c in year_cols)


def test_each_export_is_audited_with_filter_rows_and_hash(engine, hostile, now, tmp_path):
    manager = actor_for(hostile.manager_a)
    filt = CaseFilter(start=(now - timedelta(days=40)).date(), end=now.date())
    result = export_to_file(engine, manager, ExportRequest(ExportKind.EVENTS, filt),
                            tmp_path / "e.csv", now=now)
    with session_scope(engine, write=False) as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "export.events")
                             ).one()
    detail = json.loads(entry.detail)
    assert entry.user_id == hostile.manager_a.id and entry.outcome == "ok"
    assert detail["rows"] == result.rows > 0
    assert detail["sha256"] == hashlib.sha256((tmp_path / "e.csv").read_bytes()).hexdigest()
    assert detail["filter"] == filt.describe()
    assert detail["identified"] is False


def test_refusals_are_audited_and_write_nothing(engine, hostile, now, tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    coordinator = actor_for(hostile.coordinator_a)
    manager = actor_for(hostile.manager_a)
    with pytest.raises(PermissionDenied):
        export_to_file(engine, coordinator, ExportRequest(ExportKind.CASES),
                       tmp_path / "a.csv", now=now)
    with pytest.raises(PermissionDenied):
        export_to_file(engine, manager, ExportRequest(
            ExportKind.CASES, CaseFilter(team_id=hostile.team_b)), tmp_path / "b.csv", now=now)
    with pytest.raises(ValidationError, match="reason"):
        export_to_file(engine, manager, ExportRequest(ExportKind.CASES, identified=True,
                                                      reason="  "), tmp_path / "c.csv", now=now)
    assert list(tmp_path.iterdir()) == []
    with session_scope(engine, write=False) as session:
        denied = session.exec(select(AuditEntry).where(AuditEntry.outcome == "denied")).all()
    assert [e.user_id for e in denied] == [hostile.coordinator_a.id, hostile.manager_a.id]


def test_an_existing_file_is_not_overwritten_unless_asked(engine, hostile, now, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("keep me")
    admin = actor_for(hostile.admin)
    with pytest.raises(ValidationError):
        export_to_file(engine, admin, ExportRequest(ExportKind.CASES), path, now=now)
    assert path.read_text() == "keep me"
    export_to_file(engine, admin, ExportRequest(ExportKind.CASES), path, now=now, overwrite=True)
    assert path.read_text(encoding="utf-8-sig").startswith("case_id,")


def test_chunk_size_does_not_change_a_byte(engine, hostile, now, tmp_path):
    admin = actor_for(hostile.admin)
    a = export_to_file(engine, admin, ExportRequest(ExportKind.EVENTS), tmp_path / "a.csv",
                       now=now)
    b = export_to_file(engine, admin, ExportRequest(ExportKind.EVENTS), tmp_path / "b.csv",
                       now=now, chunk=3)
    assert a.sha256 == b.sha256


# --- the export filter is the on-screen filter ----------------------------------------------


def test_export_filter_selects_the_cases_the_analytics_pages_count(engine, now, tmp_path):
    from tests.analytics.dataset import seed

    with session_scope(engine) as session:
        data = seed(session, now)
    manager = data.actor("north_manager")
    filt = CaseFilter(start=(now - timedelta(days=60)).date(), end=(now - timedelta(days=5)).date())
    with session_scope(engine, write=False) as session:
        funnel = analytics.funnel(session, manager, filt)
        stages = analytics.stage_times(session, manager, filt, by="month")
        pipeline = analytics.pipeline(session, manager, filt, now=now)
        outcomes = analytics.outcomes(session, manager, filt)

    cases = read_back(export_to_file(engine, manager, ExportRequest(ExportKind.CASES, filt),
                                     tmp_path / "c.csv", now=now).path)
    assert len(cases) == funnel["reached"].iloc[0]
    seen_or_later = funnel.set_index("state").loc["seen", "reached"]
    events = read_back(export_to_file(engine, manager, ExportRequest(ExportKind.EVENTS, filt),
                                      tmp_path / "e.csv", now=now).path)
    assert events[events["to_state"] == "seen"]["case_id"].nunique() == seen_or_later
    recorded = outcomes[outcomes["kind"] == "diagnosis"]["cases"].sum()
    assert (cases["outcome_diagnosis"] != "").sum() == recorded

    st_file = read_back(export_to_file(engine, manager, ExportRequest(ExportKind.STAGE_TIMES,
                                                                      filt),
                                       tmp_path / "s.csv", now=now).path)
    assert st_file["stays"].astype(int).tolist() == stages["n"].tolist()
    assert st_file["month"].tolist() == stages["group"].tolist()
    assert st_file["median_days"].astype(float).tolist() == [
        round(float(x), 3) for x in stages["median_days"]]

    # The state filter of the cases export is the pipeline's state (no period there).
    state_filter = CaseFilter(state="referral")
    in_referral = read_back(export_to_file(engine, manager, ExportRequest(
        ExportKind.CASES, state_filter), tmp_path / "r.csv", now=now).path)
    assert len(in_referral) == pipeline.set_index("state").loc["referral", "open"]


def test_a_sqlite_export_reads_with_a_small_page_cache_and_gives_the_usual_one_back(
        sqlite_engine, now, tmp_path):
    """The 64 MB page cache the pool's connections keep (core.db) would fill with pages an
    export reads once; the export's connection uses SQLite's default size and returns to
    the pool with the usual one."""
    from sqlalchemy import event

    from core.db import SQLITE_CACHE_KIB
    from core.exports import EXPORT_CACHE_KIB

    with session_scope(sqlite_engine) as session:
        hostile = seed_hostile(session, now)
    sizes: list[str] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.startswith("PRAGMA cache_size"):
            sizes.append(statement)
        elif "FROM case_event" in statement:
            sizes.append(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())

    event.listen(sqlite_engine, "before_cursor_execute", keep)
    try:
        export_to_file(sqlite_engine, actor_for(hostile.admin),
                       ExportRequest(ExportKind.EVENTS), tmp_path / "e.csv", now=now)
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", keep)
    assert f"PRAGMA cache_size=-{EXPORT_CACHE_KIB}" in sizes
    assert -EXPORT_CACHE_KIB in sizes  # the events were read with the small cache
    assert sizes[-1] == f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}"
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -SQLITE_CACHE_KIB
