"""`casedesk run [--demo]`: the all-in-one process (DESIGN.md section 3).

Migrates the database, in demo mode seeds an empty embedded database and prints the demo
accounts, then starts the worker (`casedesk worker`, when that command is installed) and
the dashboard (Streamlit, bound to 127.0.0.1) as child processes. Ctrl-C or SIGTERM stops
both; if either exits on its own, the other is stopped and `run` exits non-zero, so a
supervisor notices.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer

from core.cli.common import engine, fail, friendly_errors
from core.config import PROJECT_ROOT, get_settings

DEFAULT_PORT = 8501
DEMO_CASES = 2000
STOP_GRACE_SECONDS = 10


def _command_names(app: typer.Typer) -> set[str]:
    names = set()
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        names.add(name)
    return names


def _casedesk(*args: str) -> list[str]:
    # The same interpreter and code as this process, whether or not the console script
    # is on PATH.
    return [sys.executable, "-c", "from core.cli import main; main()", *args]


def dashboard_command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "dashboard" / "app.py"),
            "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def prepare_demo(cases: int) -> dict:
    """Seed an empty database and (re)set the demo accounts; returns {role: (user, pw)}."""
    from core.cli.demo import seed_demo
    from core.db import session_scope
    from core.demo import count_cases, ensure_demo_accounts
    from core.timeutil import utcnow

    existing = count_cases(engine())
    if existing:
        typer.echo(f"The database already holds {existing:,} cases: no demo data added.")
    else:
        typer.echo(f"Seeding {cases:,} demo cases into the empty database...")
        # Relative to this moment, so due dates and appointments read as "today".
        summary = seed_demo(cases, 42, utcnow().replace(microsecond=0))
        typer.echo(f"  done in {summary.seconds:.1f} s.")
    with session_scope(engine()) as session:
        return ensure_demo_accounts(session, utcnow(), demo_mode=True)


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def supervise(procs: dict[str, subprocess.Popen]) -> int:
    """Wait until a signal asks us to stop (exit 0) or a child exits by itself (exit 1)."""
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:  # noqa: ANN001
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            for name, proc in procs.items():
                code = proc.poll()
                if code is not None:
                    typer.secho(f"The {name} stopped unexpectedly (exit status {code}); "
                                "stopping the rest.", fg=typer.colors.RED, err=True)
                    _stop(procs)
                    return 1
            time.sleep(0.3)
        typer.echo("Stopping...")
        _stop(procs)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def run(
        demo: bool = typer.Option(
            False, "--demo", help="Seed an empty embedded database and create demo accounts"
        ),
        port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535,
                                 help="Dashboard port (on 127.0.0.1)"),
        demo_cases: int = typer.Option(DEMO_CASES, "--demo-cases", min=1, max=100_000),
        force_demo: bool = typer.Option(
            False, "--force-demo-on-postgresql",
            help="Allow demo mode on a PostgreSQL database (never a production one)",
        ),
    ) -> None:
        """Migrate, then run the worker and the dashboard until Ctrl-C."""
        from core.cli.setup import init_database

        settings = get_settings()
        demo_mode = demo or settings.demo_mode
        if demo_mode and not settings.is_sqlite and not force_demo:
            fail("Demo mode seeds synthetic patients and known passwords, so it runs only on "
                 "the embedded SQLite database. CASEDESK_DATABASE_URL points at PostgreSQL; "
                 "unset it, or pass --force-demo-on-postgresql for a throwaway database.",
                 code=2)
        revision = init_database()
        typer.echo(f"Database ready (revision {revision}).")
        accounts = prepare_demo(demo_cases) if demo_mode else {}

        env = dict(os.environ)
        if demo_mode:
            env["CASEDESK_DEMO_MODE"] = "true"
        procs: dict[str, subprocess.Popen] = {}
        from core.cli import app as root_app

        try:
            if "worker" in _command_names(root_app):
                procs["worker"] = subprocess.Popen(_casedesk("worker"), env=env,
                                                   cwd=PROJECT_ROOT)
            else:
                typer.echo("No worker command installed: stalled-case scans will not run.")
            procs["dashboard"] = subprocess.Popen(dashboard_command(port), env=env,
                                                  cwd=PROJECT_ROOT)
        except OSError as exc:
            _stop(procs)
            fail(f"Could not start: {exc}")
        url = f"http://127.0.0.1:{port}"
        typer.echo(f"\nCase Desk is starting at {url}  (Ctrl-C stops everything)")
        if accounts:
            typer.echo("Demo accounts (demo mode only):")
            for role, (username, password) in accounts.items():
                typer.echo(f"  {role.value:<12} user {username:<12} password {password}")
        raise typer.Exit(supervise(procs))
