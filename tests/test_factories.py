from core.db import session_scope
from tests.factories import make_case, make_team


def test_make_case_stores_deadlines_from_sla_rules(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team, state="records_requested", days_in_state=4)
        assert case.due_at is not None
        # records_requested has a 10-day limit: due 6 days after now
        assert round((case.due_at - now).total_seconds() / 86400, 3) == 6.0
        assert round((case.escalate_at - now).total_seconds() / 86400, 3) == 11.0
