"""What must hold in a database after any crash or race (crash and concurrency tests):
integrity, every case's history replays to its state, every stored change has exactly
one audit row, and the audit chain verifies. Returns the problems found (empty = fine)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from sqlalchemy import Engine
from sqlmodel import select

from core import audit
from core.db import session_scope
from core.models import AuditEntry, Case, CaseEvent, ContactAttempt, Note


def check(engine: Engine) -> list[str]:
    problems: list[str] = []
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
        if rows != ["ok"]:
            problems.append(f"integrity_check: {rows[:3]}")
    with session_scope(engine, write=False) as s:
        report = audit.verify_chain(s)
        if not report.ok:
            problems.append(f"audit chain: {report.problem}")
        cases = {c.id: c for c in s.exec(select(Case)).all()}
        events = defaultdict(list)
        for e in s.exec(select(CaseEvent).order_by(CaseEvent.id)).all():
            events[e.case_id].append(e)
        versions: dict[int, Counter] = defaultdict(Counter)
        moves: set[tuple[int, int]] = set()
        notes, attempts = set(), set()
        for a in s.exec(select(AuditEntry).where(AuditEntry.case_id.is_not(None))).all():
            detail = json.loads(a.detail) if a.detail else {}
            if "version" in detail:
                versions[a.case_id][detail["version"]] += 1
            if a.action in ("case.move", "case.create"):
                moves.add((a.case_id, detail.get("version")))
            if a.action == "case.note":
                notes.add(detail.get("note_id"))
            if a.action == "contact.log":
                attempts.add(detail.get("attempt_id"))
        for note_id in s.exec(select(Note.id)).all():
            if note_id not in notes:
                problems.append(f"note {note_id} has no audit row")
        for attempt_id in s.exec(select(ContactAttempt.id)).all():
            if attempt_id not in attempts:
                problems.append(f"contact attempt {attempt_id} has no audit row")
    for case_id, case in cases.items():
        history = events[case_id]
        state = None
        for e in history:
            if e.from_state != state:
                problems.append(f"case {case_id}: event {e.id} leaves {e.from_state}, "
                                f"history was in {state}")
            state = e.to_state
            if (case_id, e.version) not in moves:
                problems.append(f"case {case_id}: event {e.id} (v{e.version}) not audited")
        if state != case.state:
            problems.append(f"case {case_id}: history replays to {state}, case is {case.state}")
        if [e.version for e in history] != sorted({e.version for e in history}):
            problems.append(f"case {case_id}: event versions not increasing")
        # Each version from 1 to the case's current one was written - and audited - once:
        # a missing one is an unaudited change, a doubled one a lost update.
        expected = Counter(range(1, case.version + 1))
        if versions[case_id] != expected:
            missing = sorted(set(expected) - set(versions[case_id]))
            doubled = sorted(v for v, n in versions[case_id].items() if n > 1)
            extra = sorted(set(versions[case_id]) - set(expected))
            problems.append(f"case {case_id} v{case.version}: audited versions missing "
                            f"{missing[:5]}, doubled {doubled[:5]}, beyond {extra[:5]}")
    return problems
