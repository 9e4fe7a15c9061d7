"""`casedesk init`: create or upgrade the database to the newest migration."""

from __future__ import annotations

import typer

from core.cli.common import engine, friendly_errors
from core.config import get_settings


def init_database() -> str:
    from core.db import migrate, session_scope
    from core.timeutil import utcnow
    from core.workflows.clocks import ensure_default_rules

    eng = engine()
    revision = migrate(eng)
    with session_scope(eng) as session:
        ensure_default_rules(session, now=utcnow())
    return revision


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def init() -> None:
        """Create the database, or upgrade it to the newest schema, and add default SLA rules."""
        revision = init_database()
        url = get_settings().database_url
        shown = url.split("@")[-1] if "@" in url else url
        typer.echo(f"Database ready at revision {revision} ({shown}).")
