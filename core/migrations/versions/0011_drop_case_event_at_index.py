"""drop ix_case_event_at, which no query uses (issue 8)

Every move and every other change that writes a history row inserted an entry into it.
No query looks history rows up by time alone: a case's history is read through
ix_case_event_case_at (case page, exports, outcomes), stage times through the stage
indexes, and the month grouping of stage times reads every row it groups anyway.
EXPLAIN QUERY PLAN of every statement the triage, case page, analytics, export and scan
benchmarks send (100k and 1M cases) never uses it.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_case_event_at", table_name="case_event")


def downgrade() -> None:
    op.create_index("ix_case_event_at", "case_event", ["at"], unique=False)
