"""`casedesk demo`: seed a synthetic service into an empty database."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import typer

from core.cli.common import engine, fail, friendly_errors
from core.config import get_settings
from core.demo_limits import MAX_CASES


def reference_now(value: str | None) -> datetime:
    """The demo's reference time: `--now` if given, else the start of the current UTC
    day, so the same seed gives the same data all day (and timestamps stay near today)."""
    if value is None:
        today = datetime.now(UTC).date()
        return datetime(today.year, today.month, today.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--now: {value!r} is not an ISO date-time (e.g. 2026-11-25T00:00:00+00:00).",
             code=2)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def seed_demo(cases: int, seed: int, now: datetime, *, quiet: bool = False):  # noqa: ANN201
    """Migrate, then generate; shows progress as a bar on a terminal, a line per chunk
    otherwise. Returns the DemoSummary."""
    from core.cli.setup import init_database
    from core.demo import generate_demo, validate_case_count

    validate_case_count(cases)  # refuse before touching the database
    init_database()
    settings = get_settings()
    if quiet:
        return generate_demo(engine(), cases=cases, seed=seed, now=now,
                             holiday_country=settings.holiday_country)
    if sys.stderr.isatty():
        with typer.progressbar(length=cases, label="Seeding demo cases", file=sys.stderr) as bar:
            last = [0]

            def on_progress(done: int, total: int) -> None:
                bar.update(done - last[0])
                last[0] = done

            return generate_demo(engine(), cases=cases, seed=seed, now=now,
                                 holiday_country=settings.holiday_country,
                                 progress=on_progress)

    def on_line(done: int, total: int) -> None:
        typer.echo(f"  {done:,} / {total:,} cases", err=True)

    return generate_demo(engine(), cases=cases, seed=seed, now=now,
                         holiday_country=settings.holiday_country, progress=on_line)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def demo(
        cases: int = typer.Option(
            2000, "--cases", "-n", min=1, max=MAX_CASES, help="How many cases to generate"
        ),
        seed: int = typer.Option(42, "--seed", help="Same seed (and --now) -> same data"),
        now: str = typer.Option(
            None, "--now", help="Reference time, ISO (default: start of today, UTC)"
        ),
    ) -> None:
        """Seed a synthetic service (staff, patients, cases with history) into an EMPTY database.

        Demo data never mixes with real cases. Same --seed and --now give the same data.
        """
        summary = seed_demo(cases, seed, reference_now(now))
        states = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.by_state.items()))
        typer.echo(
            f"Demo data: {summary.cases:,} cases ({states}); {summary.events:,} events, "
            f"{summary.records:,} record items, {summary.contacts:,} contact attempts, "
            f"{summary.users:,} users in {summary.teams} teams; seed {summary.seed}, "
            f"reference time {summary.now.isoformat()}; {summary.seconds:.1f} s."
        )
