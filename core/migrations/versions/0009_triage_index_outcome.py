"""the triage index carries outcome_recorded_at (issue 8)

The queue's rank now includes the patient-clock level derived at read time from the
biopsy date (the scan no longer stores it in cases.flag_rank). The patient clock applies
only while the outcome is not recorded, so outcome_recorded_at joins ix_cases_triage: the
scope's open cases are still ranked and sorted from the index alone. Open cases almost
never have an outcome recorded (only `seen` cases waiting to be closed), so the index
hardly grows (NULL takes no room).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BEFORE = ["team_id", "assignee_id", "flag_rank", "escalate_at", "due_at", "due_soon_at",
           "biopsy_date", "state", "appointment_at", "id"]
_AFTER = ["team_id", "assignee_id", "flag_rank", "escalate_at", "due_at", "due_soon_at",
          "biopsy_date", "outcome_recorded_at", "state", "appointment_at", "id"]
_OPEN = "state <> 'closed'"


def _create(columns: list[str]) -> None:
    op.create_index("ix_cases_triage", "cases", columns, unique=False,
                    sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))


def upgrade() -> None:
    op.drop_index("ix_cases_triage", table_name="cases")
    _create(_AFTER)


def downgrade() -> None:
    op.drop_index("ix_cases_triage", table_name="cases")
    _create(_BEFORE)
