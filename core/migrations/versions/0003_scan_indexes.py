"""covering partial indexes for the stalled-case scan

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN = "state <> 'closed'"
INDEXES = {
    "ix_cases_scan_sla": (["due_soon_at", "due_at", "escalate_at", "on_hold", "state"],
                          f"{_OPEN} AND due_soon_at IS NOT NULL"),
    "ix_cases_scan_patient": (["biopsy_date", "state", "outcome_recorded_at"],
                              f"{_OPEN} AND outcome_recorded_at IS NULL"
                              " AND biopsy_date IS NOT NULL"),
    "ix_cases_scan_risk": (["planned_treatment_start", "state", "treatment_status",
                            "outcome_recorded_at"],
                           f"{_OPEN} AND outcome_recorded_at IS NULL"
                           " AND planned_treatment_start IS NOT NULL"),
}


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        for name, (columns, where) in INDEXES.items():
            batch_op.create_index(name, columns, unique=False,
                                  sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
