"""The dashboard tests' AppTest harness (tests/dashboard/conftest.py), reused as is."""

from tests.dashboard.conftest import (  # noqa: F401 - fixtures, found by name
    _navigation_like_the_server,
    app_db,
    make_app,
)
