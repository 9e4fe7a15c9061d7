"""The dashboard's AppTest harness (issue 5's tests/dashboard/conftest.py), reused here for
the analytics and export pages."""

from tests.dashboard.conftest import (  # noqa: F401 - fixtures, found by name
    _navigation_like_the_server,
    app_db,
    make_app,
)
