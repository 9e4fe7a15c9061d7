"""flag levels derived when read: drop case_flag.escalated_at and job_run.escalated

The scan no longer escalates flags (issue 8): the level of an SLA or patient-clock flag
moves with time alone and is derived when read from the case's stored dates
(`core.flag_levels`); `case_flag.severity` keeps the level the flag had when raised. When
a flag reached a level is derivable the same way (the case's `escalate_at`, the biopsy
date plus the critical days), so `escalated_at` and the scan's count of escalations go.
`cases.flag_rank` now leaves the patient clock out too; the scan context's version moved
with it, so the first scan after this migration is a full one and rewrites every rank.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_DROPPED = (("case_flag", "escalated_at"), ("job_run", "escalated"))


def upgrade() -> None:
    for table, column in _DROPPED:
        if op.get_bind().dialect.name == "sqlite":
            # SQLite (3.35+) drops a column in place; batch mode would copy the table and
            # rebuild its partial indexes from reflection.
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)


def downgrade() -> None:
    op.add_column("case_flag", sa.Column("escalated_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                         nullable=True))
    op.add_column("job_run", sa.Column("escalated", sa.Integer(), nullable=False,
                                       server_default="0"))
