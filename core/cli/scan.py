"""`casedesk scan` (one scan now, print its counts) and `casedesk worker` (the scheduler
process with leader election; see core/worker.py)."""

from __future__ import annotations

import json
import logging
import socket

import typer

from core.cli.common import engine, fail, friendly_errors
from core.config import get_settings


def _require_schema(eng) -> None:  # noqa: ANN001
    from core.db import has_schema

    if not has_schema(eng):
        fail("The database has no tables yet: run `casedesk init` first.")


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def scan(
        as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    ) -> None:
        """Run one stalled-case scan now and print what it raised and resolved."""
        import os

        from sqlalchemy.exc import SQLAlchemyError

        from core.scan import run_scan
        from core.timeutil import utcnow

        eng = engine()
        _require_schema(eng)
        try:
            result = run_scan(eng, now=utcnow(), worker=f"cli:{socket.gethostname()}:{os.getpid()}")
        except SQLAlchemyError as exc:
            fail(f"Scan failed (recorded as a failed run): {exc.__class__.__name__}: "
                 f"{str(exc).splitlines()[0]}")
            return
        if as_json:
            typer.echo(json.dumps(result.as_dict(), sort_keys=True))
            return
        typer.echo(
            f"Scan done in {result.seconds:.2f} s: {result.raised} raised, "
            f"{result.resolved} resolved; {result.examined} cases examined"
            f" ({'full scan' if result.full else 'written or due since the last scan'})."
        )
        for kind, counts in result.by_kind.items():
            typer.echo(f"  {kind:<14} " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    @app.command()
    @friendly_errors
    def worker(
        interval_seconds: float | None = typer.Option(
            None, "--interval-seconds", min=0.5,
            help="Scan every N seconds instead of CASEDESK_SCAN_INTERVAL_MINUTES "
                 "(tests and demos).",
        ),
    ) -> None:
        """Run the scheduler: a scan every few minutes and a nightly deadline recompute.

        Start as many as you like: one leads (PostgreSQL advisory lock, or a lease row on
        SQLite), the others stand by and take over if it dies. Stops cleanly on Ctrl-C or
        SIGTERM.
        """
        from core.worker import Worker, WorkerConfig

        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        eng = engine()
        _require_schema(eng)
        config = WorkerConfig.from_settings(get_settings(), interval_seconds=interval_seconds)
        w = Worker(eng, config)
        w.install_signal_handlers()
        w.run()
