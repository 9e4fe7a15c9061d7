"""derived columns for the read paths at a million cases (issue 8)

- cases.flag_rank: the worst open flag's severity rank, kept by the scan;
- cases.furthest_rank: the furthest funnel stage reached, kept by the write path;
- case_event.team_id: the case's team on each history row, for per-team stage times;
- indexes serving the funnel and the per-team stage times from the index alone.

Existing rows are filled in here, set-based. On SQLite the new NOT NULL column needs the
history table rebuilt (ALTER TABLE cannot add a NOT NULL column without a default): a
one-off copy, about a minute at a million cases.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of core.vocab at the time of this migration (migrations must not change
# when the application code does).
_SEVERITY_RANK = {"due_soon": 1, "stalled": 2, "escalated": 3}
_FUNNEL = ("assessed", "referral", "records_requested", "records_received", "scheduled",
           "seen")


def _case(column: str, ranks: dict[str, int]) -> str:
    whens = " ".join(f"WHEN '{k}' THEN {v}" for k, v in ranks.items())
    return f"CASE {column} {whens} ELSE 0 END"


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flag_rank", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("furthest_rank", sa.Integer(), server_default="0",
                                      nullable=False))
    # Added nullable, filled, then made NOT NULL (below).
    op.add_column("case_event", sa.Column("team_id", sa.Integer(), nullable=True))

    severity = _case("f.severity", _SEVERITY_RANK)
    op.execute(
        f"UPDATE cases SET flag_rank = w.r FROM (SELECT f.case_id, max({severity}) AS r "  # noqa: S608
        "FROM case_flag f WHERE f.resolved_at IS NULL GROUP BY f.case_id) AS w "
        "WHERE w.case_id = cases.id AND w.r > 0")
    stage = _case("e.to_state", {s: i for i, s in enumerate(_FUNNEL)})
    op.execute(
        f"UPDATE cases SET furthest_rank = m.r FROM (SELECT e.case_id, max({stage}) AS r "  # noqa: S608
        "FROM case_event e GROUP BY e.case_id) AS m WHERE m.case_id = cases.id AND m.r > 0")
    op.execute("UPDATE case_event SET team_id = c.team_id FROM cases AS c "
               "WHERE c.id = case_event.case_id")

    with op.batch_alter_table("case_event", schema=None,
                              recreate="always" if sqlite else "auto") as batch_op:
        batch_op.alter_column("team_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key("fk_case_event_team_id", "team", ["team_id"], ["id"])

    with op.batch_alter_table("case_event", schema=None) as batch_op:
        batch_op.create_index("ix_case_event_team_stage_days",
                              ["team_id", "from_state", "days_in_from_state"], unique=False)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_team_assessed_furthest",
                              ["team_id", "assessed_at", "furthest_rank"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_team_assessed_furthest")
        batch_op.drop_column("furthest_rank")
        batch_op.drop_column("flag_rank")
    with op.batch_alter_table("case_event", schema=None) as batch_op:
        batch_op.drop_index("ix_case_event_team_stage_days")
        batch_op.drop_constraint("fk_case_event_team_id", type_="foreignkey")
        batch_op.drop_column("team_id")
