"""incremental stalled-case scan (issue 8): dirty marker, failed contacts, scan context

- cases.scan_dirty: set by the database itself (triggers below) whenever a column a scan
  rule reads is written, or a case is inserted; the scan claims and clears it;
- cases.failed_contacts: failed contact attempts with no successful one at or after them,
  kept by triggers on contact_attempt (so the scan never walks every attempt);
- job_run.context: the rule context a scan compared with (JSON), for the next scan;
- indexes: the dirty cases, and the open cases by escalate_at (the other stored
  thresholds already lead an index).

Existing rows start clean: a database migrated here has no scan context yet, so its first
scan is a full one. failed_contacts is filled here, set-based.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The case columns the scan's rules read (frozen copy: migrations must not change when
# the application code does). Writing any of them marks the case for the next scan.
_RULE_INPUTS = ("state", "on_hold", "due_soon_at", "due_at", "escalate_at",
                "outcome_recorded_at", "biopsy_date", "planned_treatment_start",
                "treatment_status", "failed_contacts")


def _failed_since_success(case_id: str) -> str:
    # A failure counts while no successful attempt is at or after it: exactly the
    # failures later than the newest success.
    return (
        "(SELECT count(*) FROM contact_attempt a "  # noqa: S608 - fixed text
        f"WHERE a.case_id = {case_id} AND a.outcome <> 'reached' "
        "AND NOT EXISTS (SELECT 1 FROM contact_attempt r "
        f"WHERE r.case_id = {case_id} AND r.outcome = 'reached' AND r.at >= a.at))"
    )


def _recount(case_id: str) -> str:
    return (f"UPDATE cases SET failed_contacts = {_failed_since_success(case_id)} "  # noqa: S608
            f"WHERE id = {case_id}")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Plain ALTER TABLE ADD COLUMN with constant defaults: no copy of the table on SQLite
    # (an expression default would make a batch rebuild it). '0' reads as false on both.
    op.add_column("cases", sa.Column("scan_dirty", sa.Boolean(), server_default="0",
                                     nullable=False))
    op.add_column("cases", sa.Column("failed_contacts", sa.Integer(), server_default="0",
                                     nullable=False))
    op.add_column("job_run", sa.Column("context", sa.Text(), nullable=True))

    op.execute(
        "UPDATE cases SET failed_contacts = w.n FROM (SELECT a.case_id, count(*) AS n "
        "FROM contact_attempt a WHERE a.outcome <> 'reached' AND NOT EXISTS ("
        "SELECT 1 FROM contact_attempt r WHERE r.case_id = a.case_id "
        "AND r.outcome = 'reached' AND r.at >= a.at) GROUP BY a.case_id) AS w "
        "WHERE w.case_id = cases.id")

    dirty = "scan_dirty = 1" if sqlite else "scan_dirty"
    op.create_index("ix_cases_scan_dirty", "cases", ["id"], unique=False,
                    sqlite_where=sa.text(dirty), postgresql_where=sa.text(dirty))
    open_escalate = "state <> 'closed' AND escalate_at IS NOT NULL"
    op.create_index("ix_cases_scan_escalate", "cases", ["escalate_at"], unique=False,
                    sqlite_where=sa.text(open_escalate),
                    postgresql_where=sa.text(open_escalate))

    columns = ", ".join(_RULE_INPUTS)
    if sqlite:
        # SQLite cannot change NEW in a trigger: a second UPDATE of the same row (its page
        # is in cache), only when the row is not already marked.
        op.execute(f"CREATE TRIGGER cases_scan_dirty_update AFTER UPDATE OF {columns} "  # noqa: S608
                   "ON cases FOR EACH ROW WHEN NEW.scan_dirty = 0 "
                   "BEGIN UPDATE cases SET scan_dirty = 1 WHERE id = NEW.id; END")
        op.execute("CREATE TRIGGER cases_scan_dirty_insert AFTER INSERT ON cases "
                   "FOR EACH ROW WHEN NEW.scan_dirty = 0 "
                   "BEGIN UPDATE cases SET scan_dirty = 1 WHERE id = NEW.id; END")
        op.execute("CREATE TRIGGER contact_attempt_count_insert AFTER INSERT ON contact_attempt "
                   f"FOR EACH ROW BEGIN {_recount('NEW.case_id')}; END")
        op.execute("CREATE TRIGGER contact_attempt_count_delete AFTER DELETE ON contact_attempt "
                   f"FOR EACH ROW BEGIN {_recount('OLD.case_id')}; END")
        op.execute("CREATE TRIGGER contact_attempt_count_update AFTER UPDATE OF case_id, "
                   "outcome, at ON contact_attempt FOR EACH ROW "
                   f"BEGIN {_recount('OLD.case_id')}; {_recount('NEW.case_id')}; END")
        return
    op.execute("CREATE FUNCTION cases_mark_scan_dirty() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN NEW.scan_dirty := true; RETURN NEW; END $$")
    op.execute(f"CREATE TRIGGER cases_scan_dirty_update BEFORE UPDATE OF {columns} ON cases "
               "FOR EACH ROW EXECUTE FUNCTION cases_mark_scan_dirty()")
    op.execute("CREATE TRIGGER cases_scan_dirty_insert BEFORE INSERT ON cases "
               "FOR EACH ROW EXECUTE FUNCTION cases_mark_scan_dirty()")
    op.execute(
        "CREATE FUNCTION contact_attempt_recount() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        f"IF TG_OP <> 'INSERT' THEN {_recount('OLD.case_id')}; END IF; "
        f"IF TG_OP <> 'DELETE' THEN {_recount('NEW.case_id')}; END IF; "
        "RETURN NULL; END $$")
    op.execute("CREATE TRIGGER contact_attempt_count AFTER INSERT OR DELETE OR UPDATE OF "
               "case_id, outcome, at ON contact_attempt FOR EACH ROW "
               "EXECUTE FUNCTION contact_attempt_recount()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("cases_scan_dirty_update", "cases_scan_dirty_insert",
                     "contact_attempt_count_insert", "contact_attempt_count_delete",
                     "contact_attempt_count_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS contact_attempt_count ON contact_attempt")
        op.execute("DROP TRIGGER IF EXISTS cases_scan_dirty_update ON cases")
        op.execute("DROP TRIGGER IF EXISTS cases_scan_dirty_insert ON cases")
        op.execute("DROP FUNCTION IF EXISTS contact_attempt_recount()")
        op.execute("DROP FUNCTION IF EXISTS cases_mark_scan_dirty()")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_scan_escalate")
        batch_op.drop_index("ix_cases_scan_dirty")
        batch_op.drop_column("failed_contacts")
        batch_op.drop_column("scan_dirty")
    op.drop_column("job_run", "context")
