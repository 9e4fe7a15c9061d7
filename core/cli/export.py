"""`casedesk export cases|events|stage-times --out FILE`: the same export as the Exports
page (core/exports.py), so the same filter gives the same bytes.

Without --as-user the command acts as the system (every team, de-identified only); an
identified export must name the person it is for with --as-user and give a --reason,
and that person's role must allow it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from core.cli.common import engine, fail, friendly_errors


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    from core.validation import parse_date

    return parse_date(value, field=option)


def _resolve_team(session, team: str | None) -> int | None:  # noqa: ANN001
    if team is None:
        return None
    from sqlmodel import select

    from core.errors import NotFoundError
    from core.models import Team

    found = session.exec(select(Team).where(Team.name == team)).first()
    if found is None and team.isdigit():
        found = session.get(Team, int(team))
    if found is None:
        raise NotFoundError(f"No team called {team!r}.")
    return found.id


def _resolve_actor(session, username: str | None):  # noqa: ANN001, ANN202
    from sqlmodel import select

    from core.actor import Actor
    from core.errors import NotFoundError
    from core.models import User
    from core.vocab import Role

    if username is None:
        return Actor.system("casedesk export")
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.is_active:
        raise NotFoundError(f"No active user {username!r}.")
    return Actor(user_id=user.id, username=user.username, role=Role(user.role),
                 team_id=user.team_id)


def run_export(kind: str, out: Path, *, start: str | None, end: str | None, team: str | None,
               state: str | None, identified: bool, reason: str | None, as_user: str | None,
               force: bool) -> None:
    from core.analytics.filters import CaseFilter
    from core.db import session_scope
    from core.exports import ExportKind, ExportRequest, export_to_file
    from core.timeutil import utcnow

    if identified and as_user is None:
        fail("An identified export must name who it is for: add --as-user USERNAME.")
    eng = engine()
    with session_scope(eng, write=False) as session:
        actor = _resolve_actor(session, as_user)
        team_id = _resolve_team(session, team)
    filt = CaseFilter(start=_parse_day(start, "--from"), end=_parse_day(end, "--to"),
                      team_id=team_id, state=state)
    req = ExportRequest(ExportKind(kind), filt, identified=identified, reason=reason)
    result = export_to_file(eng, actor, req, out, now=utcnow(), overwrite=force)
    typer.echo(f"Wrote {result.rows:,} rows to {result.path} ({result.bytes:,} bytes, "
               f"sha256 {result.sha256}).")
    if result.request.identified:
        typer.echo("It identifies patients: keep it encrypted and delete it when done.")


def register(app: typer.Typer) -> None:
    export_app = typer.Typer(help="Export cases, events or stage times as CSV "
                                  "(de-identified unless --identified).",
                             no_args_is_help=True)
    app.add_typer(export_app, name="export")

    def make(kind: str, doc: str) -> None:
        @export_app.command(kind, help=doc)
        @friendly_errors
        def command(
            out: Path = typer.Option(..., "--out", help="CSV file to write."),
            start: str | None = typer.Option(None, "--from",
                                             help="Cases assessed on or after (YYYY-MM-DD)."),
            end: str | None = typer.Option(None, "--to",
                                           help="Cases assessed on or before (YYYY-MM-DD)."),
            team: str | None = typer.Option(None, "--team", help="Team name (or id)."),
            state: str | None = typer.Option(
                None, "--state",
                help="Current state of the case (for stage-times: the stage)."),
            identified: bool = typer.Option(
                False, "--identified", help="Include names, contact details, exact dates."),
            reason: str | None = typer.Option(None, "--reason",
                                              help="Why an identified export is needed."),
            as_user: str | None = typer.Option(
                None, "--as-user", help="Check permissions as this user (and audit as them)."),
            force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
        ) -> None:
            run_export(kind, out, start=start, end=end, team=team, state=state,
                       identified=identified, reason=reason, as_user=as_user, force=force)

    make("cases", "One row per case.")
    make("events", "One row per move in a case's history.")
    make("stage-times", "Median and 90th percentile days per state and month.")
