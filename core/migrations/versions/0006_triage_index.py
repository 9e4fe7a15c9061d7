"""covering partial indexes for the triage queue and its headline numbers (issue 8)

- ix_cases_triage: the queue ranks a scope's open cases by max(stored flag rank, SLA
  level at `now`), then by deadline, biopsy date and id. Every column of that key, of
  the scope (team, assignee), of the state filter and of the headline's counts is in
  this index, so ranking, sorting and counting read a narrow index instead of every wide
  case row; only the page's rows are read from the table. `id` is listed for
  PostgreSQL's index-only scans (SQLite has the rowid).
- ix_record_item_requested_chase: the headline's "records overdue" probe (a requested
  record past its chase date, per case) answered from the index alone.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = ["team_id", "assignee_id", "flag_rank", "escalate_at", "due_at", "due_soon_at",
            "biopsy_date", "state", "appointment_at", "id"]
_OPEN = "state <> 'closed'"
_REQUESTED = "status = 'requested'"


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_triage", _COLUMNS, unique=False,
                              sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))
    with op.batch_alter_table("record_item", schema=None) as batch_op:
        batch_op.create_index("ix_record_item_requested_chase", ["case_id", "chase_on", "status"],
                              unique=False, sqlite_where=sa.text(_REQUESTED),
                              postgresql_where=sa.text(_REQUESTED))


def downgrade() -> None:
    with op.batch_alter_table("record_item", schema=None) as batch_op:
        batch_op.drop_index("ix_record_item_requested_chase")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_triage")
