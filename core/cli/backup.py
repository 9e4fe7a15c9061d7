"""`casedesk backup FILE` and `casedesk restore FILE` (see core/backup.py for how).

`restore` exits 0 only when the restored database verifies (integrity, sanity query,
audit chain); 3 when it was restored but does not verify, like `audit verify`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer

from core.cli.common import engine, fail, friendly_errors

VERIFY_FAILED_EXIT = 3


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from core.db import MIGRATIONS_DIR

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _database_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """A database that cannot be reached is a message, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            first = str(exc.orig or exc).strip().splitlines()[0]
            fail(f"Error: cannot open the database: {first}")

    return wrapper


def register(app: typer.Typer) -> None:
    @app.command("backup")
    @friendly_errors
    @_database_errors
    def backup_command(
        file: Path = typer.Argument(..., help="Where to write the backup (it holds PHI)."),
        force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    ) -> None:
        """Back up the whole database to FILE (SQLite online backup, or pg_dump -Fc)."""
        from core.actor import Actor
        from core.backup import backup
        from core.timeutil import utcnow

        result = backup(engine(), file, actor=Actor.system("casedesk backup"), now=utcnow(),
                        force=force)
        typer.echo(f"Backup written to {result.path} ({result.bytes:,} bytes, "
                   f"sha256 {result.sha256}).")
        if result.check is not None:
            if not result.check.ok:
                fail(f"The backup does not verify: {result.check.summary()}",
                     code=VERIFY_FAILED_EXIT)
            typer.echo(f"Checked: {result.check.summary()}.")
        typer.echo("It contains patient data: store it encrypted, never in git.")

    @app.command("restore")
    @friendly_errors
    @_database_errors
    def restore_command(
        file: Path = typer.Argument(..., help="A file written by `casedesk backup`."),
        force: bool = typer.Option(
            False, "--force", help="Replace a database that already holds data."
        ),
    ) -> None:
        """Replace the database with a backup, then verify it (integrity, audit chain)."""
        from core.actor import Actor
        from core.backup import restore
        from core.timeutil import utcnow

        report = restore(engine(), file, actor=Actor.system("casedesk restore"), now=utcnow(),
                         force=force)
        if not report.ok:
            fail(f"Restored, but the database does NOT verify: {report.summary()}",
                 code=VERIFY_FAILED_EXIT)
        typer.echo(f"Restored from {file}: {report.summary()}.")
        head = _head_revision()
        if report.revision != head:
            typer.echo(f"The backup's schema ({report.revision}) is older than this version "
                       f"({head}): run `casedesk init` to upgrade it.")
