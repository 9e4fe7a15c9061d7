"""Helpers shared by CLI commands: settings errors as clean exits, the engine, output."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

from core.config import SettingsError, get_settings
from core.errors import CaseDeskError


def fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn configuration and domain errors into a message and a non-zero exit status,
    never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SettingsError as exc:
            fail(str(exc), code=2)
        except CaseDeskError as exc:
            fail(f"Error: {exc}", code=1)

    return wrapper


def engine():  # noqa: ANN201
    from core.db import get_engine

    return get_engine(get_settings().database_url)


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)
