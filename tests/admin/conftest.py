# The admin pages use the dashboard's AppTest harness.
from tests.dashboard.conftest import _navigation_like_the_server, app_db, make_app  # noqa: F401
