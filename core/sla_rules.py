"""Admin edits of the SLA limits (DESIGN.md sections 5 and 7).

An edit changes the rule and, in the same transaction, every stored deadline it affects
(clocks.recompute_all_deadlines), so the triage queue and the scan never work from a
limit that no longer exists. Audited with the old and new values.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from core import audit
from core.actor import Actor
from core.config import get_settings
from core.errors import NotFoundError, ValidationError
from core.models import SlaRule
from core.permissions import Action, require
from core.vocab import FUNNEL, CaseState
from core.workflows.clocks import recompute_all_deadlines

MAX_LIMIT_DAYS = 365


def list_rules(session: Session) -> list[SlaRule]:
    order = {s.value: i for i, s in enumerate(FUNNEL)}
    rules = session.exec(select(SlaRule)).all()
    return sorted(rules, key=lambda r: order.get(r.state, 99))


def update_rule(
    session: Session, *, state: str, limit_days: int, business_days: bool, actor: Actor,
    now: datetime,
) -> tuple[SlaRule, int]:
    """Change one state's limit; returns the rule and how many cases' deadlines moved."""
    require(actor, Action.MANAGE_SLA)
    try:
        state = CaseState(state).value
    except ValueError:
        raise ValidationError(f"Unknown state {state!r}.") from None
    if isinstance(limit_days, bool) or not isinstance(limit_days, int):
        raise ValidationError("The limit must be a whole number of days.")
    if not 1 <= limit_days <= MAX_LIMIT_DAYS:
        raise ValidationError(f"The limit must be between 1 and {MAX_LIMIT_DAYS} days.")
    rule = session.get(SlaRule, state)
    if rule is None:
        raise NotFoundError(f"There is no SLA rule for {state}.")
    before = {"limit_days": rule.limit_days, "business_days": rule.business_days}
    if before == {"limit_days": limit_days, "business_days": bool(business_days)}:
        return rule, 0
    rule.limit_days = limit_days
    rule.business_days = bool(business_days)
    rule.updated_at = now
    rule.updated_by_id = actor.user_id
    session.add(rule)
    session.flush()
    moved = recompute_all_deadlines(session, now=now,
                                    holiday_country=get_settings().holiday_country)
    audit.record(session, actor=actor, action="sla.update", now=now,
                 detail={"state": state, "before": before,
                         "after": {"limit_days": limit_days,
                                   "business_days": bool(business_days)},
                         "cases_recomputed": moved})
    return rule, moved
