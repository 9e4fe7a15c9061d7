"""The `casedesk` command line (Typer). Each command group lives in its own module and is
registered here; commands are added when they work, never as placeholders.

`casedesk export ...` runs an app holding only the export group: an export is timed as a
whole process (issue 8), and the other groups bring the demo generator, the workflow
engine and more (about half a second of CPU at every start) that an export never uses.
Everything else, and `from core.cli import app`, gets the whole command line."""

from __future__ import annotations

import importlib
import sys
from functools import cache

import typer

# Registration order is the order `casedesk --help` lists them in.
_GROUPS = ("setup", "demo", "run", "users", "audit", "backup", "export", "scan")
_ALONE = {"export": "export"}  # first argument -> the one group that serves it


def build_app(groups: tuple[str, ...] = _GROUPS) -> typer.Typer:
    app = typer.Typer(
        name="casedesk",
        help="Case Desk: case management for cancer second-opinion nurse coordinators.",
        no_args_is_help=True,
        add_completion=False,
    )

    @app.callback()
    def _root() -> None:
        """Case Desk: case management for cancer second-opinion nurse coordinators."""

    for group in groups:
        importlib.import_module(f"core.cli.{group}").register(app)
    return app


@cache
def _whole_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # built on first use, so `casedesk export` never builds it
        return _whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:  # pragma: no cover - console entry point
    alone = _ALONE.get(sys.argv[1]) if len(sys.argv) > 1 else None
    (build_app((alone,)) if alone else _whole_app())()
