"""The `casedesk` command line (Typer). Each command group lives in its own module and is
registered here; commands are added when they work, never as placeholders."""

from __future__ import annotations

import typer

from core.cli import audit as audit_cli
from core.cli import backup as backup_cli
from core.cli import demo as demo_cli
from core.cli import export as export_cli
from core.cli import run as run_cli
from core.cli import scan as scan_cli
from core.cli import setup
from core.cli import users as users_cli

app = typer.Typer(
    name="casedesk",
    help="Case Desk: case management for cancer second-opinion nurse coordinators.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Case Desk: case management for cancer second-opinion nurse coordinators."""


setup.register(app)
demo_cli.register(app)
run_cli.register(app)
users_cli.register(app)
audit_cli.register(app)
backup_cli.register(app)
export_cli.register(app)
scan_cli.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()
