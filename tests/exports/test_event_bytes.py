"""The events file, byte for byte: the same text on SQLite and PostgreSQL (each backend
runs these tests against the one expected file), the same bytes from the fast paths
(SQLite's running count, PostgreSQL's COPY) as from the general writer, and the day
counts rounded as decimals (half away from zero) from exact microseconds."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from core.actor import Actor
from core.db import session_scope
from core.exports import (
    BOM,
    ExportKind,
    ExportRequest,
    _Sink,
    _write_rows,
    csv_field,
    export_to_file,
)
from core.models import CaseEvent
from tests.factories import make_case, make_team

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# (seconds after the assessment, stored days_in_from_state) of each later move
MOVES = [
    (18 * 60, 2.6945),  # 0.0125 days -> 0.013; a stored x.xxx5 rounds up as a decimal
    (86400 + 18 * 60, 2.125),  # 1.0125 days: a float tie that binary rounding would lose
    (3 * 86400 + 39.999514, 0.0),  # a fraction above .9995 s must not carry a second
    (40 * 86400, 8.1115),
]

EXPECTED = (
    "case_id,event_no,team,from_state,to_state,year,days_since_assessment,"
    "days_in_from_state,timezone\r\n"
    "{a},1,'=Team A,,assessed,2026,0.0,,UTC\r\n"
    "{a},2,'=Team A,assessed,referral,2026,0.013,2.695,UTC\r\n"
    "{a},3,'=Team A,referral,records_requested,2026,1.013,2.125,UTC\r\n"
    "{a},4,'=Team A,records_requested,records_received,2026,3.0,0.0,UTC\r\n"
    "{a},5,'=Team A,records_received,scheduled,2026,40.0,8.112,UTC\r\n"
    '{b},1,"Breast, ""East""\tx\\y",,assessed,2026,0.0,,UTC\r\n'
)


@pytest.fixture
def events(engine):
    states = ["assessed", "referral", "records_requested", "records_received", "scheduled"]
    with session_scope(engine) as session:
        team_a = make_team(session, now=T0, name="=Team A")
        team_b = make_team(session, now=T0, name='Breast, "East"\tx\\y')
        a = make_case(session, now=T0, team=team_a)
        for i, (seconds, days) in enumerate(MOVES):
            session.add(CaseEvent(case_id=a.id, from_state=states[i], to_state=states[i + 1],
                                  at=T0 + timedelta(seconds=seconds), days_in_from_state=days,
                                  version=i + 2, team_id=a.team_id))
        b = make_case(session, now=T0 + timedelta(days=1), team=team_b)
        return a.id, b.id


def test_events_file_is_the_same_text_on_every_database(engine, events, tmp_path):
    a, b = events
    result = export_to_file(engine, Actor.system("test"), ExportRequest(ExportKind.EVENTS),
                            tmp_path / "e.csv", now=T0)
    assert (tmp_path / "e.csv").read_bytes().decode("utf-8") == \
        BOM + EXPECTED.format(a=a, b=b)
    assert result.rows == 6


@pytest.mark.parametrize("chunk", [1, 2, 20_000])
def test_fast_events_path_writes_what_the_general_writer_writes(engine, events, tmp_path,
                                                                chunk):
    actor, req = Actor.system("test"), ExportRequest(ExportKind.EVENTS)
    fast = export_to_file(engine, actor, req, tmp_path / "fast.csv", now=T0, chunk=chunk)
    general = io.BytesIO()
    sink = _Sink(general)
    sink.write(BOM + ",".join(EXPECTED.split("\r\n")[0].split(",")) + "\r\n")
    rows = _write_rows(engine, actor, req, sink, chunk)
    assert rows == fast.rows
    assert general.getvalue() == (tmp_path / "fast.csv").read_bytes()


def test_csv_field_quotes_only_when_csv_writer_would():
    assert csv_field("Team A") == "Team A"
    assert csv_field('a,"b"') == '"a,""b"""'
    assert csv_field("two\nlines") == '"two\nlines"'
