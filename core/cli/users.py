"""`casedesk user add/list/disable`: accounts from the command line.

Whoever runs the CLI has the machine and its database: they act as the system admin
(`Actor.system("cli")`), and every change is audited like one made on the admin page.
A password is never an argument (it would sit in the shell history and in `ps`): it is
read from a hidden prompt, or from standard input with --password-stdin.
"""

from __future__ import annotations

import sys

import typer

from core.cli.common import engine, fail, friendly_errors
from core.vocab import Role

user_app = typer.Typer(help="Add, list and disable user accounts.", no_args_is_help=True)


def _ready_engine():  # noqa: ANN202
    """The engine, once we know the schema is there (a clear message instead of 'no such
    table' on a database that was never initialised)."""
    from core.db import has_schema

    eng = engine()
    if not has_schema(eng):
        fail("The database has no tables yet: run `casedesk init` first.")
    return eng


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            fail("No password on standard input.", code=2)
        return password
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@user_app.command("add")
@friendly_errors
def add(
    username: str = typer.Argument(..., help="Sign-in name: lower-case letters, digits, . _ -"),
    full_name: str = typer.Option(..., "--full-name", help="Name shown in the app"),
    role: Role = typer.Option(..., "--role", case_sensitive=False),
    team: str = typer.Option(None, "--team", help="Team name (coordinators and managers)"),
    create_team: bool = typer.Option(False, "--create-team", help="Create the team if new"),
    email: str = typer.Option(None, "--email", help="For single sign-on (optional)"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input"
    ),
) -> None:
    """Add an account (password from a hidden prompt, or stdin with --password-stdin)."""
    from core.actor import Actor
    from core.db import session_scope
    from core.timeutil import utcnow
    from core.users import check_password_strength, create_user

    eng = _ready_engine()  # settings and schema errors surface before the prompt
    password = _read_password(password_stdin)
    check_password_strength(password, username=username)
    with session_scope(eng) as session:
        user = create_user(session, username=username, full_name=full_name, role=role,
                           password=password, team_name=team, create_team=create_team,
                           email=email, actor=Actor.system("cli"), now=utcnow())
        typer.echo(f"Added {user.role} {user.username} (id {user.id}).")


@user_app.command("list")
@friendly_errors
def list_(
    active_only: bool = typer.Option(False, "--active-only", help="Hide disabled accounts"),
) -> None:
    """List accounts: username, role, team, status."""
    from core.db import session_scope
    from core.users import list_users

    with session_scope(_ready_engine(), write=False) as session:
        rows = list_users(session, include_disabled=not active_only)
    if not rows:
        typer.echo("No users yet. Add one with: casedesk user add <username> ...")
        return
    width = max(len(u.username) for u, _ in rows)
    for user, team in rows:
        status = "active" if user.is_active else "disabled"
        typer.echo(f"{user.username:<{width}}  {user.role:<11}  {status:<8}  {team or '-'}")


@user_app.command("disable")
@friendly_errors
def disable(username: str = typer.Argument(..., help="The account to disable")) -> None:
    """Disable an account (kept for the history; it can no longer sign in)."""
    from core.actor import Actor
    from core.db import session_scope
    from core.timeutil import utcnow
    from core.users import disable_user

    with session_scope(_ready_engine()) as session:
        user = disable_user(session, username=username, actor=Actor.system("cli"),
                            now=utcnow())
    typer.echo(f"Disabled {user.username}.")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
