"""drop two indexes on cases that no query uses any more (issue 8)

Every change of a case's state or deadlines rewrites an entry in each index on those
columns, so an index nothing reads is pure cost on the write path:

- ix_cases_open_due (due_at, id) over the open cases: the triage queue's first index,
  replaced by ix_cases_triage (migration 0006); its last reader, the scan's work list of
  cases whose due_at fell between two scans, went when SLA levels became derived when
  read (migration 0008);
- ix_cases_scan_escalate (escalate_at) over the open cases: the same work list's
  escalate_at crossings (migration 0005), gone with it.

Checked with EXPLAIN QUERY PLAN of every statement the triage, case page, analytics,
export and scan benchmarks send (100k and 1M cases): neither index appears in any plan.
At a million cases a move writes 24.7 pages to the WAL instead of 28.5.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_OPEN = "state <> 'closed'"
_OPEN_ESCALATE = "state <> 'closed' AND escalate_at IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_cases_open_due", table_name="cases")
    op.drop_index("ix_cases_scan_escalate", table_name="cases")


def downgrade() -> None:
    op.create_index("ix_cases_open_due", "cases", ["due_at", "id"], unique=False,
                    sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))
    op.create_index("ix_cases_scan_escalate", "cases", ["escalate_at"], unique=False,
                    sqlite_where=sa.text(_OPEN_ESCALATE),
                    postgresql_where=sa.text(_OPEN_ESCALATE))
