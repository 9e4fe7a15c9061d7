"""stage_stay_count: how many stays of each length each team's history holds (issue 8)

One row per (team, state left, eighth of a day): the number of history rows whose
`days_in_from_state` lies in [bucket / 8, (bucket + 1) / 8). Stage-time percentiles read
it to find which bucket holds a rank, then read only that bucket's few entries off
ix_case_event_team_stage_days (core.analytics.stay_percentiles). Before, every
stay of the team was read: PostgreSQL's percentile_cont over a team's 300,000 stays took
~145 ms at a million cases, and even counting them took 82 ms.

Kept by triggers on case_event, like `cases.failed_contacts` (0005), so no writer - the
moves, the demo, a bulk copy in SQL - can leave it behind (on PostgreSQL at COMMIT: see
below; SQLite writers are serialised by the database lock, so a plain trigger does).

Eighths, not tenths: x * 8 and b / 8 are exact in binary floating point, so "bucket >= b"
and "days >= b / 8" select exactly the same rows, and a rank found in the counts is the
same rank in the index.

Filled here from the existing history, set-based.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def bucket_sql(days: str, dialect: str) -> str:
    """floor(days * 8) as an integer (SQLite has no floor() without its math extension:
    CAST truncates toward zero, so one is taken off for a negative fraction). Frozen
    here; running code uses core.analytics.stay_percentiles.bucket_sql."""
    if dialect == "postgresql":
        return f"floor({days} * 8)::integer"
    return f"(CAST({days} * 8 AS INTEGER) - ({days} * 8 < CAST({days} * 8 AS INTEGER)))"


def _add(team: str, state: str, days: str, dialect: str, delta: int) -> str:
    return ("INSERT INTO stage_stay_count (team_id, state, bucket, stays) "  # noqa: S608 - fixed
            f"VALUES ({team}, {state}, {bucket_sql(days, dialect)}, {delta}) "
            "ON CONFLICT (team_id, state, bucket) DO UPDATE "
            f"SET stays = stage_stay_count.stays + {delta}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "stage_stay_count",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("stays", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "state", "bucket"),
    )
    op.execute(
        "INSERT INTO stage_stay_count (team_id, state, bucket, stays) "  # noqa: S608
        f"SELECT team_id, from_state, {bucket_sql('days_in_from_state', dialect)}, count(*) "
        "FROM case_event WHERE from_state IS NOT NULL AND days_in_from_state IS NOT NULL "
        "GROUP BY 1, 2, 3")
    counted = "{r}.from_state IS NOT NULL AND {r}.days_in_from_state IS NOT NULL"
    if dialect == "sqlite":
        new = ("NEW.team_id", "NEW.from_state", "NEW.days_in_from_state")
        old = ("OLD.team_id", "OLD.from_state", "OLD.days_in_from_state")
        op.execute("CREATE TRIGGER case_event_stay_insert AFTER INSERT ON case_event "
                   f"FOR EACH ROW WHEN {counted.format(r='NEW')} "
                   f"BEGIN {_add(*new, dialect, 1)}; END")
        op.execute("CREATE TRIGGER case_event_stay_delete AFTER DELETE ON case_event "
                   f"FOR EACH ROW WHEN {counted.format(r='OLD')} "
                   f"BEGIN {_add(*old, dialect, -1)}; END")
        # An update is a delete of the old row and an insert of the new one (two triggers:
        # each side has its own WHEN).
        for side, args, delta in (("old", old, -1), ("new", new, 1)):
            r = side.upper()
            op.execute(f"CREATE TRIGGER case_event_stay_update_{side} AFTER UPDATE OF "
                       "team_id, from_state, days_in_from_state ON case_event "
                       f"FOR EACH ROW WHEN {counted.format(r=r)} "
                       f"BEGIN {_add(*args, dialect, delta)}; END")
        return
    new = ("NEW.team_id", "NEW.from_state", "NEW.days_in_from_state")
    old = ("OLD.team_id", "OLD.from_state", "OLD.days_in_from_state")
    op.execute(
        "CREATE FUNCTION case_event_count_stay() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        f"IF TG_OP <> 'INSERT' AND {counted.format(r='OLD')} THEN "
        f"{_add(*old, dialect, -1)}; END IF; "
        f"IF TG_OP <> 'DELETE' AND {counted.format(r='NEW')} THEN "
        f"{_add(*new, dialect, 1)}; END IF; "
        "RETURN NULL; END $$")
    # Deferred to COMMIT: a move locks its count row only once every statement of its
    # transaction has run - after the audit chain's advisory lock (core.audit), which
    # every audited write takes. Taken at the INSERT, the count row was locked before the
    # advisory lock, and two moves waiting for each other's lock deadlocked (twenty
    # threads at once, tests/security/test_concurrency.py).
    op.execute("CREATE CONSTRAINT TRIGGER case_event_stay_count AFTER INSERT OR DELETE OR "
               "UPDATE OF team_id, from_state, days_in_from_state ON case_event "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
               "EXECUTE FUNCTION case_event_count_stay()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update_old", "update_new"):
            op.execute(f"DROP TRIGGER IF EXISTS case_event_stay_{name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS case_event_stay_count ON case_event")
        op.execute("DROP FUNCTION IF EXISTS case_event_count_stay()")
    op.drop_table("stage_stay_count")
